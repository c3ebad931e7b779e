"""What both hub fixtures (tests/hub_fixtures.py: the process spawner; tests/hub_docker_fixtures.py:
the container spawner) do the same way: run code in a student's kernel as a notebook does (an
execute_request on the kernel's websocket, its output collected until the kernel is idle again),
and stop the services a hub left behind."""
from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from pathlib import Path

import psutil


class KernelError(AssertionError):
    """Code run in a student's kernel raised, or did not finish in time (fails the test)."""


def execute_request(code: str, username: str, session: str) -> "tuple[str, dict]":
    """A Jupyter execute_request for ``code`` on the shell channel: (its msg_id, the message)."""
    msg_id = uuid.uuid4().hex
    return msg_id, {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": username, "session": session,
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}


def run_in_kernel(send, recv, code: str, who: str, username: str, session: str, timeout: float) -> str:
    """Run ``code`` over a kernel's websocket (``send(text)``; ``recv(seconds left)`` returns the next
    message's text); its stdout and the repr of its last expression.  KernelError, with the kernel's
    traceback and the output so far, if it raised or did not finish within ``timeout`` seconds."""
    msg_id, msg = execute_request(code, username, session)
    send(json.dumps(msg))
    out, error = [], None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise KernelError(f"{who}'s kernel still running after {timeout:.0f} s; output so far: "
                              f"{''.join(out)[-2000:]}")
        reply = json.loads(recv(left))
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = reply["msg_type"], reply["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "execute_result":
            out.append(content["data"].get("text/plain", "") + "\n")
        elif kind == "error":
            error = "\n".join(content.get("traceback") or [f"{content['ename']}: {content['evalue']}"])
        elif kind == "status" and content.get("execution_state") == "idle":
            break  # after every output of this request
    if error:
        raise KernelError(f"in {who}'s kernel:\n{error[-3000:]}\n{''.join(out)[-2000:]}")
    return "".join(out)


def stop_services_of(api_port: int, timeout: float = 10) -> "list[int]":
    """Kill the processes that carry a hub's API URL on ``api_port`` (``JUPYTERHUB_API_URL``, on any
    address): the hub's services (the idle culler, the class service) run in sessions of their own,
    and a hub stopped while it was still starting leaves them polling an API that is gone.  The
    ports are free ones the fixtures chose, so no one else's process matches.  Their pids."""
    if not api_port:
        return []
    pattern = re.compile(rb"JUPYTERHUB_API_URL=http://[^/]+:%d/hub/api/?" % api_port)
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if any(pattern.fullmatch(v) for v in Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0")):
                p.kill()
                found.append(p)
    psutil.wait_procs(found, timeout=timeout)
    return [p.pid for p in found]
