"""JupyterHub for a class on one server: ``jupyterhub -f hub/jupyterhub_config.py``, as root.

Driven by environment variables (hub/README.md lists them with their defaults); nothing here
needs editing for a class.  Students run the lab in their own single-user server: a container
each (``LAB_HUB_SPAWNER=docker``, hub/docker_spawner.py) or a process each under a Unix user of
their own (``process``, hub/spawners.py).  The hub's state (its database, cookie secret, the
proxy's pid file) lives in ``<LAB_CLASS_ROOT>/hub`` (0700), so one class root is one class.
"""
import os
import shutil
import sys
from pathlib import Path

HUB_DIR = Path(__file__).resolve().parent
if str(HUB_DIR) not in sys.path:  # spawners.py, docker_spawner.py and class_service.py live next to this file
    sys.path.insert(0, str(HUB_DIR))

from lab.system.home import cache_dir  # noqa: E402  (the lab's cache: where ensure-hub.sh puts the proxy)

c = get_config()  # noqa: F821  (defined by JupyterHub when it loads this file)


def setting(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def number(name: str, default: float, lo: float = 0) -> float:
    raw = setting(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        sys.exit(f"{name}={raw!r} is not a number: set it to a number of at least {lo:g}, or unset it")
    if value < lo:
        sys.exit(f"{name}={raw!r} is below {lo:g}: set it to a number of at least {lo:g}, or unset it")
    return value


def docker_answers() -> bool:
    """Does a Docker daemon answer here (the default spawner is then docker)?"""
    try:
        import docker  # lazy: only when LAB_HUB_SPAWNER is unset; the SDK is a dependency of the lab
        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def find_proxy() -> str:
    """configurable-http-proxy: on PATH, else where scripts/ensure-hub.sh installs it."""
    found = shutil.which("configurable-http-proxy")
    if found:
        return found
    local = cache_dir() / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return str(local)
    sys.exit("configurable-http-proxy is not installed: run `bash scripts/ensure-hub.sh` "
             "(it needs npm: `sudo apt-get install npm`)")


CLASS_ROOT = Path(setting("LAB_CLASS_ROOT", "/srv/pglab-class")).absolute()
SPAWNER = setting("LAB_HUB_SPAWNER", "") or ("docker" if docker_answers() else "process")
if SPAWNER not in ("process", "docker"):
    sys.exit(f"LAB_HUB_SPAWNER={SPAWNER!r}: use 'process' (a Unix user per student) or 'docker' (a container each)")
ADMINS = {a.strip() for a in setting("LAB_HUB_ADMINS", "").split(",") if a.strip()}
IP = setting("LAB_HUB_IP", "127.0.0.1")
PORT = int(number("LAB_HUB_PORT", 8000, lo=1))
API_PORT = int(number("LAB_HUB_API_PORT", 8081, lo=1))          # the hub's own API, for the servers
PROXY_API_PORT = int(number("LAB_HUB_PROXY_API_PORT", 8001, lo=1))  # the proxy's API, for the hub
CULL_TIMEOUT = int(number("LAB_HUB_CULL_TIMEOUT", 3600))        # seconds idle before a server is stopped; 0: never
MEM_LIMIT = setting("LAB_HUB_MEM_LIMIT", "")                     # per student, e.g. 2G
CPU_LIMIT = number("LAB_HUB_CPU_LIMIT", 0)                       # per student, in CPUs, e.g. 1.5; 0: none

STATE = CLASS_ROOT / "hub"
STATE.mkdir(parents=True, exist_ok=True)
os.chmod(STATE, 0o700)
for d in (CLASS_ROOT, CLASS_ROOT / "homes"):  # the students' lab homes, each 0700 and theirs (made at spawn)
    d.mkdir(exist_ok=True)
    os.chmod(d, 0o711)  # every student passes through to their own lab home and lists none
os.environ["LAB_CLASS_ROOT"] = str(CLASS_ROOT)  # the spawners and the class service read it

# --- the hub and its proxy ----------------------------------------------------------------
c.JupyterHub.bind_url = f"http://{IP}:{PORT}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{API_PORT}"
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")  # made 0600 by the hub
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PROXY_API_PORT}"
c.ConfigurableHTTPProxy.pid_file = str(STATE / "jupyterhub-proxy.pid")
c.ConfigurableHTTPProxy.command = [find_proxy()]
c.JupyterHub.cleanup_servers = True  # the hub's stop stops every student's server (and so their clusters)

# --- accounts -----------------------------------------------------------------------------
c.Authenticator.admin_users = ADMINS
if setting("LAB_HUB_TEST_AUTH", "") == "dummy":  # tests only: any name, any password
    c.JupyterHub.authenticator_class = "dummy"
    c.Authenticator.allow_all = True
else:
    # Students sign up at /hub/signup; an instructor authorizes each one at /hub/authorize.
    # Instructors (LAB_HUB_ADMINS) sign up with their name and are authorized at once.
    import nativeauthenticator  # lazy: only with this authenticator; it comes with the hub extra

    c.JupyterHub.authenticator_class = "native"
    c.JupyterHub.template_paths = [str(Path(nativeauthenticator.__file__).parent / "templates")]
    c.NativeAuthenticator.open_signup = False
    c.NativeAuthenticator.minimum_password_length = 10
    c.NativeAuthenticator.check_common_password = True
    c.Authenticator.allow_all = True  # anyone who can log in: NativeAuthenticator logs in authorized users only

# --- the students' servers ----------------------------------------------------------------
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 300  # a first start copies the notebooks and imports JupyterLab; 30 at once on 2 cores took 150 s (bench/classroom.py)
c.Spawner.http_timeout = 120
if MEM_LIMIT:
    c.Spawner.mem_limit = MEM_LIMIT
if CPU_LIMIT:
    c.Spawner.cpu_limit = CPU_LIMIT

if SPAWNER == "process":
    c.JupyterHub.spawner_class = "spawners.ClassProcessSpawner"
    c.ClassProcessSpawner.class_root = str(CLASS_ROOT)
    c.ClassProcessSpawner.user_prefix = setting("LAB_HUB_USER_PREFIX", "pglab-")
else:
    from docker_spawner import configure  # lazy: hub/docker_spawner.py, only for the docker spawner

    configure(c)

# --- services: the idle culler and the instructor's view of the class ---------------------
services, roles = [], []
if CULL_TIMEOUT:
    services.append({
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={CULL_TIMEOUT}",
                    f"--cull-every={max(10, min(300, CULL_TIMEOUT // 4))}"],
    })
    roles.append({"name": "idle-culler", "services": ["idle-culler"],
                  "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]})

CLASS_SERVICE = HUB_DIR / "class_service.py"
if CLASS_SERVICE.exists():
    CLASS_SERVICE_PORT = int(number("LAB_HUB_CLASS_SERVICE_PORT", 10101, lo=1))
    services.append({
        "name": "pglab-class",
        "command": [sys.executable, str(CLASS_SERVICE)],
        "url": f"http://127.0.0.1:{CLASS_SERVICE_PORT}",  # it listens where JUPYTERHUB_SERVICE_URL says
        "environment": {"LAB_CLASS_ROOT": str(CLASS_ROOT), "LAB_HUB_SPAWNER": SPAWNER},
        "oauth_no_confirm": True,
    })
    roles.append({"name": "pglab-class", "services": ["pglab-class"],
                  "scopes": ["list:users", "read:users", "read:servers", "admin:servers"]})
    if ADMINS:
        roles.append({"name": "pglab-instructor", "users": sorted(ADMINS),
                      "scopes": ["access:services!service=pglab-class"]})

c.JupyterHub.services = services
c.JupyterHub.load_roles = roles
if CLASS_SERVICE.exists():
    # The instructor's notebook (hub/instructor.ipynb), in their own server, calls the class service
    # with that server's token.  A token holds only scopes its user has: a student's server token
    # asks for the service too, and gets nothing a student's role does not give.
    c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server",
                                     "read:services!service=pglab-class", "access:services!service=pglab-class"]
