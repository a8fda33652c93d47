"""progtc's own HTTP API on ``progtc-kernel serve``, for the clients that exist today.

Spoken here as a client does (httpx, server-sent events), and by the ``progtc``
package's own clients, installed from PyPI: 0.2.0 (``X-Progtc-API-Key``), and the
two dialects of ``Authorization: Bearer`` clients, which send the same requests but
expect different errors: 0.1.1 (the seed's release, served by default) and 0.1.5
(``serve --progtc-dialect 0.1.5``).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import ENVS, build_env
from .servers import TOKEN, JupyterProcess, free_port, pool_status, until

pytestmark = pytest.mark.timeout(300)


def progtc_api_server(home: Path, *args: str) -> JupyterProcess:
    port = free_port()
    return JupyterProcess(
        [
            sys.executable,
            "-m",
            "progtc_kernel.cli",
            "serve",
            "--port",
            str(port),
            "--api-key",
            TOKEN,
            "--code-execution-timeout",
            "8",
            "--tool-call-timeout",
            "2",
            *args,
        ],
        port,
        home,
    )


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[JupyterProcess]:
    process = await progtc_api_server(tmp_path_factory.mktemp("serve-http")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
async def served_015(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[JupyterProcess]:
    """A server for progtc 0.1.2 to 0.1.5's clients, with the default warm pool as the
    other releases' server has: their client gives up on a response that does not
    start within 5 s (httpx's default), and with one warm kernel its second execution
    waits for a kernel start, which a loaded machine can make longer than that."""
    process = await progtc_api_server(
        tmp_path_factory.mktemp("serve-http-015"), "--progtc-dialect", "0.1.5"
    ).start()
    yield process
    process.stop()


@pytest.fixture
async def http(served: JupyterProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=served.url, headers={"X-Progtc-API-Key": TOKEN}, timeout=60
    ) as client:
        yield client


async def events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The ``data:`` messages of a server-sent-events stream."""
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


async def execute(
    http: httpx.AsyncClient, body: dict[str, Any], answer: Any = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run code as progtc's client does: answer each tool call; return (calls, final)."""
    calls: list[dict[str, Any]] = []
    async with http.stream("POST", "/execute-code", json=body) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for message in events(response):
            if message["type"] != "tool_call":
                return calls, message
            calls.append(message)
            posted = await http.post(
                "/tool-results",
                json={
                    "execution_id": message["execution_id"],
                    "tool_call_id": message["id"],
                    "result": answer(*message["args"], **message["kwargs"]),
                },
            )
            assert posted.status_code == 200 and posted.json() is None
    raise AssertionError("the stream ended without a final message")


async def test_ping_needs_no_key(served: JupyterProcess) -> None:
    async with httpx.AsyncClient(base_url=served.url) as anyone:
        response = await anyone.get("/ping")
    assert response.status_code == 200 and response.content == b""


async def test_a_run_with_tool_calls(http: httpx.AsyncClient) -> None:
    calls, final = await execute(
        http,
        {
            "tool_names": ["add"],
            "code": "from tools import add\nimport asyncio\n"
            "print(await asyncio.gather(add(1, 2), add(3, b=4)))",
        },
        answer=lambda a, b: a + b,
    )
    assert [(c["tool_name"], c["args"], c["kwargs"]) for c in calls] == [
        ("add", [1, 2], {}),
        ("add", [3], {"b": 4}),
    ]
    assert final == {"type": "success", "stdout": "[3, 7]\n", "stderr": ""}


async def test_the_final_message_of_each_error(http: httpx.AsyncClient) -> None:
    _, syntax = await execute(http, {"tool_names": [], "code": "x = = 1"})
    assert syntax["type"] == "syntax_error" and "SyntaxError" in syntax["stderr"]
    assert syntax["code"] == "code_compilation_error"  # the seed release's fields, too
    _, runtime = await execute(http, {"tool_names": [], "code": "print('a')\n1 / 0"})
    assert (runtime["type"], runtime["stdout"]) == ("runtime_error", "a\n")
    assert runtime["message"] == "ZeroDivisionError: division by zero"
    assert "ZeroDivisionError" in runtime["stderr"]
    _, timeout = await execute(
        http, {"tool_names": [], "code": "import time\nprint('so far', flush=True)\ntime.sleep(60)"}
    )
    assert (timeout["type"], timeout["stdout"]) == ("timeout_error", "so far\n")


async def test_an_unanswered_tool_call_times_out_in_the_code(http: httpx.AsyncClient) -> None:
    async with http.stream(
        "POST",
        "/execute-code",
        json={
            "tool_names": ["slow"],
            "code": "from tools import slow\ntry:\n    await slow()\n"
            "except TimeoutError:\n    print('timed out')",
        },
    ) as response:
        messages = [message async for message in events(response)]
    assert [m["type"] for m in messages] == ["tool_call", "success"]
    assert messages[-1]["stdout"] == "timed out\n"
    late = await http.post(
        "/tool-results",
        json={  # accepted, and dropped
            "execution_id": messages[0]["execution_id"],
            "tool_call_id": messages[0]["id"],
            "result": 1,
        },
    )
    assert late.status_code == 200


async def test_modules(http: httpx.AsyncClient) -> None:
    _, final = await execute(
        http,
        {
            "tool_names": ["add"],
            "modules": {
                "helpers": "from tools import add\n"
                "async def twice(x):\n"
                "    return await add(x, x)\n"
            },
            "code": "from helpers import twice\nprint(await twice(21))",
        },
        answer=lambda a, b: a + b,
    )
    assert final["stdout"] == "42\n"
    bad = await http.post(
        "/execute-code", json={"tool_names": [], "code": "", "modules": {"a.b": ""}}
    )
    assert bad.status_code == 422
    assert "Module name 'a.b' is not a valid identifier." in bad.text
    reserved = await http.post(
        "/execute-code", json={"tool_names": [], "code": "", "modules": {"tools": ""}}
    )
    assert reserved.status_code == 422 and "is reserved" in reserved.text
    taken = await http.post(
        "/execute-code", json={"tool_names": [], "code": "", "modules": {"json": "x = 1"}}
    )
    assert taken.status_code == 400
    assert taken.json() == {"detail": "Client module names conflicts with existing modules: json"}


async def test_keys_of_both_generations_and_clear_refusals(served: JupyterProcess) -> None:
    body = {"tool_names": [], "code": "print('ok')"}
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as anyone:
        for headers in ({"X-Progtc-API-Key": TOKEN}, {"Authorization": f"Bearer {TOKEN}"}):
            response = await anyone.post("/execute-code", json=body, headers=headers)
            assert response.status_code == 200 and '"stdout":"ok\\n"' in response.text
    # (Jupyter Server answered those with a login cookie, as it does: a stranger has none.)
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as anyone:
        missing = await anyone.post("/execute-code", json=body)
        assert missing.status_code == 401
        assert "X-Progtc-API-Key" in missing.json()["detail"]
        wrong = await anyone.post("/execute-code", json=body, headers={"X-Progtc-API-Key": "wrong"})
        assert wrong.status_code == 401 and "wrong" in wrong.json()["detail"]
        bearer_wrong = await anyone.post(
            "/tool-results", json={}, headers={"Authorization": "Bearer wrong"}
        )
        assert bearer_wrong.status_code == 401


async def test_bearer_clients_get_the_seed_releases_errors_by_default(
    served: JupyterProcess, served_015: JupyterProcess
) -> None:
    """progtc 0.1.1 and 0.1.5 send the same request; the server's dialect decides."""
    body = {"tool_names": [], "code": "1 / 0"}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=bearer, timeout=60) as client:
        seed = (await client.post(f"{served.url}/execute-code", json=body)).text
        later = (await client.post(f"{served_015.url}/execute-code", json=body)).text
    assert '"type":"error"' in seed and '"code":"code_runtime_error"' in seed
    assert '"type":"runtime_error"' in later


async def test_bad_bodies_name_what_is_wrong(http: httpx.AsyncClient) -> None:
    malformed = await http.post(
        "/execute-code", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["type"] == "json_invalid"
    unknown = await http.post("/execute-code", json={"code": "", "tool_names": [], "colour": "red"})
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "colour"]
    missing = await http.post("/execute-code", json={"tool_names": []})
    assert missing.json()["detail"][0]["loc"] == ["body", "code"]
    nameless = await http.post("/execute-code", json={"code": "", "tool_names": ["my-tool"]})
    assert nameless.status_code == 422 and "my-tool" in nameless.text


async def test_a_result_for_an_unknown_execution_or_call_is_404(http: httpx.AsyncClient) -> None:
    nowhere = await http.post(
        "/tool-results", json={"execution_id": "nope", "tool_call_id": "nope", "result": None}
    )
    assert nowhere.status_code == 404 and "no execution 'nope'" in nowhere.json()["detail"]
    async with http.stream(
        "POST",
        "/execute-code",
        json={"tool_names": ["wait"], "code": "from tools import wait\nprint(await wait())"},
    ) as response:
        stream = events(response)
        call = await anext(stream)
        stray = await http.post(
            "/tool-results",
            json={"execution_id": call["execution_id"], "tool_call_id": "nope", "result": 1},
        )
        assert stray.status_code == 404 and "made no tool call 'nope'" in stray.text
        await http.post(
            "/tool-results",
            json={"execution_id": call["execution_id"], "tool_call_id": call["id"], "result": 5},
        )
        assert (await anext(stream))["stdout"] == "5\n"


async def test_a_client_that_disconnects_mid_run_has_its_run_cancelled_and_kernel_reaped(
    served: JupyterProcess, http: httpx.AsyncClient
) -> None:
    async with http.stream(
        "POST",
        "/execute-code",
        json={"tool_names": ["wait"], "code": "from tools import wait\nawait wait()"},
    ) as response:
        call = await anext(events(response))
        assert (await pool_status(served))["pool"]["leased"] == 1

    # The connection is closed: the run is cancelled and its kernel shut down.
    async def reaped() -> bool:
        return bool((await pool_status(served))["pool"]["leased"] == 0)

    await until(reaped, "the kernel of a vanished client reaped")
    late = await http.post(
        "/tool-results",
        json={"execution_id": call["execution_id"], "tool_call_id": call["id"], "result": 1},
    )
    assert late.status_code == 200  # a finished execution: its late results are dropped


# -- the progtc package's own clients -------------------------------------------------

PROGTC_CLIENT = """
import asyncio, json, sys
from progtc import AsyncProgtcClient

async def add(a, b, c=0):
    return a + b + c

def kind(result):
    code = getattr(result, "code", None)  # progtc 0.1.1 only
    return [result.type.value, code and code.value]

async def main():
    client = AsyncProgtcClient(base_url=sys.argv[1], api_key=sys.argv[2])
    report = {}
    if hasattr(client, "ping"):  # from 0.1.4
        report["ping"] = await client.ping()
    if hasattr(client, "wait_for_server"):  # from 0.1.6
        await client.wait_for_server(timeout=30)
    ok = await client.execute_code(
        "from tools import add\\nimport asyncio\\n"
        "print(await asyncio.gather(add(1, 2), add(1, 2, c=3)))", {"add": add})
    failed = await client.execute_code("print('x')\\n1/0", {"add": add})
    syntax = await client.execute_code("x = = 1", {})
    report["ok"] = [ok.type.value, ok.stdout]
    report["failed"] = [*kind(failed), failed.stdout, "ZeroDivisionError" in failed.stderr]
    report["syntax"] = kind(syntax)
    print(json.dumps(report))

asyncio.run(main())
"""


def progtc_011_env() -> str:
    """progtc 0.1.1, the seed's release, in an environment of this Python (3.11).

    Its package says Python >= 3.12, but only for three PEP 695 aliases (``type X =
    ...``) in progtc/types.py: installed regardless of that (pip's
    --ignore-requires-python; uv's --python-version 3.12), with those three lines
    rewritten as plain assignments, its client runs unchanged on 3.11."""
    env = ENVS / "progtc-0.1.1"
    ready = env / ".progtc-ready"
    python = build_env("progtc-0.1.1", ["httpx>=0.28.1", "httpx-sse>=0.4.3", "pydantic>=2.12.5"])
    if not ready.exists():
        uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
        install = (
            [uv, "pip", "install", "-q", "--python", python, "--python-version", "3.12"]
            if uv
            else [python, "-m", "pip", "install", "-q", "--ignore-requires-python"]
        )
        subprocess.run([*install, "--no-deps", "progtc==0.1.1"], check=True)
        found = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        )
        types = Path(found.stdout.strip()) / "progtc" / "types.py"  # (not importable yet)
        source, rewritten = re.subn(r"(?m)^type (\w+) = ", r"\1 = ", types.read_text())
        assert rewritten == 3, f"progtc 0.1.1's types.py changed: {rewritten} aliases"
        # A new file, not the old one rewritten: uv hard-links installed files to its
        # cache, and editing in place would change every later install of 0.1.1 too.
        types.unlink()
        types.write_text(source)
        ready.write_text("progtc==0.1.1, PEP 695 aliases rewritten")
    return python


async def release_env(release: str) -> str:
    if release == "0.1.1":
        return await asyncio.to_thread(progtc_011_env)
    return await asyncio.to_thread(build_env, f"progtc-{release}", [f"progtc=={release}"])


@pytest.mark.parametrize(
    ("release", "dialect"),
    [
        ("0.2.0", "X-Progtc-API-Key"),
        ("0.1.5", "Bearer, --progtc-dialect 0.1.5"),
        ("0.1.1", "Bearer, the default"),
    ],
)
async def test_the_progtc_packages_own_client_works_unchanged(
    served: JupyterProcess, served_015: JupyterProcess, tmp_path: Path, release: str, dialect: str
) -> None:
    python = await release_env(release)
    server = served_015 if release == "0.1.5" else served
    script = tmp_path / "client.py"
    script.write_text(PROGTC_CLIENT)
    done = await asyncio.to_thread(
        subprocess.run,
        [python, str(script), server.url, TOKEN],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report.get("ping", True) is True
    assert report["ok"] == ["success", "[3, 6]\n"]
    if release == "0.1.1":  # the seed's README: result.type == "error", result.code
        assert report["failed"] == ["error", "code_runtime_error", "x\n", True]
        assert report["syntax"] == ["error", "code_compilation_error"]
    else:
        assert report["failed"] == ["runtime_error", None, "x\n", True]
        assert report["syntax"] == ["syntax_error", None]
