"""The HTTP API (FastAPI; OpenAPI at /docs).

    GET  /health                 is the app up, and which node answered
    GET  /coins                  the coins
    GET  /prices/{symbol}        ticks in a time range (start, end, limit), oldest first
    GET  /candles/{symbol}       OHLCV candles, interval=1m|5m|1h|1d
    GET  /market/summary         last price, 24 h change and volume per coin
    POST /ticks                  write ticks (Authorization: Bearer <APP_API_TOKEN>); the commit LSN
    GET  /cluster                the nodes as the app sees them

Every read answers with ``X-Served-By`` (the node), ``X-Served-Role`` and ``X-Replica-Lag-Ms``
headers (and ``X-Read-Fallback`` when a replica did not serve it, and why).  A read may pass
``min_lsn`` (the LSN a write returned): only a node that has replayed it serves the read.
Times are RFC 3339 date-times with their offset (``2026-01-31T12:00:00Z``), as the schema says.
Bad input is a 422 with a message (a body that is not JSON a 400); an unknown symbol a 404; no node
to answer a 503 with Retry-After.  The schema at /openapi.json says all of it: what it allows is
accepted, what it does not is refused (tests/test_app_fuzz.py checks both).

Run it: ``python -m app api`` (settings from APP_* variables, see app/settings.py).
"""
import contextlib
import datetime as dt
import json
import logging
import re
import secrets
from typing import Annotated, Literal, Optional

from psycopg2.extras import execute_values
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, Field, field_validator

from . import __version__, schema
from .db import Router, Served, Unavailable
from .feed import dedupe, wait_for_schema
from .market import Tick, select_coins
from .settings import Settings

log = logging.getLogger("app.api")
UTC = dt.timezone.utc
LSN_PATTERN = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"
SYMBOL_PATTERN = r"^[A-Za-z0-9]{1,20}$"
MAX_LIMIT = 10_000
# What the schema's ``format: date-time`` means (RFC 3339): a date, "T", a time and an offset.  Nothing
# else is read as a time: not a number (pydantic would take 0.5 as seconds since 1970), not a time
# without an offset, not a date alone.  The fraction may be longer than Python's microseconds.
RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})")
TIME_HINT = "an RFC 3339 date-time with its offset, e.g. 2026-01-31T12:00:00Z"
# A tick's year, as written, from 1970 to 8999 (charts and the 24 h summary need nothing older; the
# offset can then never carry the time out of Python's years 1-9999).  Written into the schema as a
# pattern, so that what the schema allows the server accepts.
TICK_TIME_PATTERN = r"^(19[7-9][0-9]|[2-8][0-9]{3})-[0-9]{2}-[0-9]{2}[Tt].*$"


# --- response and request models (for /docs and the schema tests) -----------------------
class Coin(BaseModel):
    symbol: str
    name: str


class PricePoint(BaseModel):
    time: dt.datetime
    price: float
    volume: float


class Prices(BaseModel):
    symbol: str
    prices: list[PricePoint]


class Candle(BaseModel):
    time: dt.datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    ticks: int


class Candles(BaseModel):
    symbol: str
    interval: str
    candles: list[Candle]


class CoinSummary(BaseModel):
    symbol: str
    name: str
    time: Optional[dt.datetime] = None
    price: Optional[float] = None
    change_24h_pct: Optional[float] = None
    volume_24h: Optional[float] = None


def rfc3339(value):
    """A date-time as the schema defines it (``RFC3339``), parsed; anything else is refused with
    ``TIME_HINT``.  A ``datetime`` given by Python code (the app in-process) passes as it is."""
    if isinstance(value, dt.datetime):
        return value
    m = RFC3339.fullmatch(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"not {TIME_HINT}")
    date, time, fraction, offset = m.groups()
    fraction = f".{(fraction + '00000')[:6]}" if fraction else ""
    offset = "+00:00" if offset in "Zz" else offset
    try:
        return dt.datetime.fromisoformat(f"{date}T{time}{fraction}{offset}")
    except ValueError as e:
        raise ValueError(f"not a real date or time ({e}): {TIME_HINT}") from None


Time = Annotated[dt.datetime, BeforeValidator(rfc3339)]


class TickIn(BaseModel):
    symbol: Annotated[str, Field(pattern=SYMBOL_PATTERN, examples=["BTC"])]
    # strict: a number, as the schema says (not true/false, not "1.5")
    price: Annotated[float, Field(ge=1e-9, le=1e12, allow_inf_nan=False, strict=True)]
    volume: Annotated[float, Field(ge=0, le=1e15, allow_inf_nan=False, strict=True)] = 0.0
    time: Optional[Time] = Field(None, description=f"when; default: now. {TIME_HINT}, its year 1970-8999",
                                 json_schema_extra={"pattern": TICK_TIME_PATTERN})

    @field_validator("time")
    @classmethod
    def _utc(cls, v):
        if v is not None:
            if not 1970 <= v.year <= 8999:  # the year as written, as the schema's pattern says
                raise ValueError("the year must be from 1970 to 8999")
            v = v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
        return v


class TicksIn(BaseModel):
    ticks: Annotated[list[TickIn], Field(min_length=1, max_length=1000)]


class Written(BaseModel):
    written: int
    lsn: str = Field(description="the commit LSN: pass it as min_lsn to read your own write")
    primary: str


class Node(BaseModel):
    configured_as: str
    host: str
    port: str
    node: Optional[str]
    role: Optional[str]
    reachable: bool
    lag_ms: Optional[float]
    lsn: Optional[str]
    reads_served: int
    error: Optional[str]


class ClusterView(BaseModel):
    read_from: str
    nodes: list[Node]


class Health(BaseModel):
    status: str
    version: str


class Problem(BaseModel):
    detail: str


ERRORS = {404: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}}
NOT_JSON = {400: {"model": Problem, "description": "the body is not JSON"}}


# --- helpers ----------------------------------------------------------------------------
def _json(data, served: "Served | None" = None, status: int = 200) -> Response:
    """JSON without a second validation pass (the fast path: rows are made to fit the models)."""
    body = json.dumps(data, separators=(",", ":"), default=_default, allow_nan=False)
    return Response(body, status_code=status, media_type="application/json",
                    headers=served.headers() if served else None)


def _default(o):
    if isinstance(o, dt.datetime):
        return o.isoformat()
    raise TypeError(type(o).__name__)


def _problem(status: int, detail: str, headers: "dict | None" = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class NotFound(Exception):
    def __init__(self, detail: str, served: "Served | None" = None):
        super().__init__(detail)
        self.served = served


class Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status


def _utc(t: "dt.datetime | None", edge: dt.datetime) -> "dt.datetime | None":
    """``t`` in UTC (PostgreSQL takes offsets up to 15:59 only, RFC 3339 up to 23:59).  A time whose
    offset carries it past Python's first or last year is given as ``edge``, the bound on that side:
    no tick is older than year 1 or newer than 9999."""
    if t is None:
        return None
    try:
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except OverflowError:
        return edge


def _range(start, end):
    """[start, end] in UTC.  An ``end`` before ``start`` is an empty range, answered as such (the
    schema cannot say that one parameter must follow another, so the server does not refuse it)."""
    return (_utc(start, dt.datetime.min.replace(tzinfo=UTC)), _utc(end, dt.datetime.max.replace(tzinfo=UTC)))


Symbol = Annotated[str, Path(pattern=SYMBOL_PATTERN, description="a coin symbol, e.g. BTC",
                                 examples=["BTC"])]
MinLsn = Annotated[Optional[str], Query(pattern=LSN_PATTERN, description=(
    "read your writes: only a node that has replayed this LSN (as POST /ticks returned it) serves the read"))]
Start = Annotated[Optional[Time], Query(description=f"from ({TIME_HINT})")]
End = Annotated[Optional[Time], Query(description=f"to ({TIME_HINT}); before start: an empty range")]


# --- the app ------------------------------------------------------------------------------
def create_app(settings: "Settings | None" = None, router: "Router | None" = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment).  ``uvicorn app.api:create_app --factory``."""
    settings = settings or Settings.from_env()
    coins = select_coins(settings.coins)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio.to_thread
        r = router or Router(settings)
        app.state.router = r
        # reads run in worker threads: as many as there are connections to hand out, and some
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, settings.pool_size * (1 + len(settings.replica_dsns)) + 8)
        await anyio.to_thread.run_sync(lambda: wait_for_schema(r, coins, timeout=10))
        yield
        if router is None:
            r.close()

    app = FastAPI(title="Crypto app on a replicated PostgreSQL", version=__version__, lifespan=lifespan,
                  description="Writes go to the primary, reads to the replicas (see the X-Served-By header).")

    def get_router(request: Request) -> Router:
        return request.app.state.router

    R = Annotated[Router, Depends(get_router)]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        parts = []
        for e in errs[:3]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body",)) or "request"
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return _problem(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable):
        return _problem(503, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused):
        return _problem(exc.status, str(exc), {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return _problem(404, str(exc), exc.served.headers() if exc.served else None)

    def _read(router: Router, sql: str, params, min_lsn, symbol: "str | None" = None) -> tuple[str, Served]:
        """The JSON ``sql`` answers on a replica (or the primary); 404 when ``symbol`` is unknown there."""
        text, served = router.read_json(sql, params, min_lsn)
        if symbol is not None and text == "[]":
            def exists(cur):
                cur.execute(schema.COIN_EXISTS_SQL, (symbol,))
                return cur.fetchone()[0]
            known, served = router.read(exists, min_lsn)
            if not known:
                raise NotFound(f"unknown symbol {symbol}: GET /coins lists the known ones", served)
        return text, served

    def _raw(body: str, served: Served) -> Response:
        return Response(body, media_type="application/json", headers=served.headers())

    @app.get("/health", response_model=Health, responses=ERRORS, tags=["app"])
    def health(router: R):
        """200 when a node answers a read (the headers say which)."""
        _, served = router.read(lambda cur: cur.execute("SELECT 1"))
        return _json({"status": "ok", "version": __version__}, served)

    @app.get("/coins", response_model=list[Coin], responses=ERRORS, tags=["market"])
    def list_coins(router: R, min_lsn: MinLsn = None):
        return _raw(*_read(router, schema.COINS_JSON, None, min_lsn))

    @app.get("/prices/{symbol}", response_model=Prices, responses=ERRORS, tags=["market"])
    def prices(router: R, symbol: Symbol, start: Start = None, end: End = None,
               limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many, the newest")] = 100,
               min_lsn: MinLsn = None):
        """The newest ``limit`` ticks in [start, end], oldest first."""
        symbol = symbol.upper()
        start, end = _range(start, end)
        text, served = _read(router, schema.PRICES_JSON,
                             {"coin": symbol, "start": start, "end": end, "limit": limit}, min_lsn, symbol)
        return _raw(f'{{"symbol":"{symbol}","prices":{text}}}', served)

    @app.get("/candles/{symbol}", response_model=Candles, responses=ERRORS, tags=["market"])
    def candles(router: R, symbol: Symbol,
                interval: Annotated[Literal["1m", "5m", "1h", "1d"], Query()] = "1h",
                start: Start = None, end: End = None,
                limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many, the newest")] = 200,
                min_lsn: MinLsn = None):
        """OHLCV candles computed in SQL from the ticks, oldest first."""
        symbol = symbol.upper()
        start, end = _range(start, end)
        params = {"coin": symbol, "secs": schema.INTERVALS[interval], "start": start, "end": end, "limit": limit}
        text, served = _read(router, schema.CANDLES_JSON, params, min_lsn, symbol)
        return _raw(f'{{"symbol":"{symbol}","interval":"{interval}","candles":{text}}}', served)

    @app.get("/market/summary", response_model=list[CoinSummary], responses=ERRORS, tags=["market"])
    def market_summary(router: R, min_lsn: MinLsn = None):
        """Per coin: last price, its change over 24 h (%), and the volume of those 24 h."""
        return _raw(*_read(router, schema.SUMMARY_JSON, None, min_lsn))

    def require_token(authorization: Annotated[Optional[str], Header(
            description="Bearer <APP_API_TOKEN>")] = None) -> None:
        if not settings.api_token:
            raise Refused(403, "writes are disabled: start the API with APP_API_TOKEN set")
        m = re.fullmatch(r"\s*Bearer\s+(\S+)\s*", authorization or "")
        if not m or not secrets.compare_digest(m.group(1).encode(), settings.api_token.encode()):
            raise Refused(401, "missing or wrong token: send 'Authorization: Bearer <APP_API_TOKEN>'")

    @app.post("/ticks", response_model=Written, status_code=201, dependencies=[Depends(require_token)],
              responses={**NOT_JSON, 401: {"model": Problem}, 403: {"model": Problem}, **ERRORS}, tags=["market"])
    def post_ticks(router: R, body: TicksIn):
        """Write ticks on the primary in one transaction; the commit LSN (pass it as ``min_lsn``)."""
        now = dt.datetime.now(UTC)
        ticks = dedupe(Tick(t.symbol.upper(), t.time or now, t.price, t.volume) for t in body.ticks)
        wanted = sorted({t.coin for t in ticks})

        def fn(cur):
            cur.execute("SELECT coalesce(array_agg(symbol), '{}') FROM coins WHERE symbol = ANY(%s)", (wanted,))
            unknown = sorted(set(wanted) - set(cur.fetchone()[0]))
            if not unknown:
                execute_values(cur, schema.INSERT_TICKS_SQL, [(t.coin, t.time, t.price, t.volume) for t in ticks],
                               page_size=max(1, len(ticks)))  # one statement: its coins' summary locks in one order
            return unknown
        unknown, lsn, primary = router.write(fn)
        if unknown:
            raise NotFound(f"unknown symbol {', '.join(unknown)}: GET /coins lists the known ones")
        return _json({"written": len(ticks), "lsn": lsn, "primary": primary}, status=201)

    @app.get("/cluster", response_model=ClusterView, tags=["app"])
    def cluster(router: R):
        """Every configured node: its name, role, replay lag, LSN, and the reads it served here."""
        nodes = router.nodes()
        answered = [n["node"] for n in nodes if n["reachable"]]
        return _json({"read_from": settings.read_from, "nodes": nodes},
                     Served(",".join(answered) or "none", "cluster", max([n["lag_ms"] or 0 for n in nodes] or [0])))

    return app
