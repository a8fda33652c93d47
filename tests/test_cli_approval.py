"""``--approve TOOL`` and a tools module's ``REQUIRES_APPROVAL``: ``progtc-kernel run``
and ``attach`` ask the person at the terminal before such a call runs.

The terminal is real: the command runs on a pseudo-terminal (Python's ``pty``), and
the test types its answers once the question is on the screen."""

from __future__ import annotations

import asyncio
import codecs
import os
import pty
import select
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from progtc_kernel import Approval
from progtc_kernel.cli._common import parse_answer
from progtc_kernel.host.loading import approval_policy, load_tools

from .test_attach import Attach, person  # noqa: F401  (a fixture)
from .test_bridge import run_cell
from .test_cli import progtc_kernel

ROOT = Path(__file__).resolve().parent.parent

MAIL_TOOLS = '''\
def send_email(to: str, subject: str) -> str:
    """Send an email."""
    return f"sent {subject!r} to {to}"

def get_weather(city: str) -> str:
    return f"Sunny in {city}"

def transfer(amount: int) -> str:
    return f"moved {amount}"

# Every send_email, and a transfer above 100, waits for a person's approval.
def REQUIRES_APPROVAL(tool, arguments):
    return tool == "send_email" or (tool == "transfer" and arguments["amount"] > 100)
'''

MAIL_SCRIPT = """\
import asyncio
from tools import send_email, get_weather, transfer, ToolDeniedError

print(await get_weather("Paris"))          # needs no approval
print(await transfer(amount=5))            # nor does a small transfer
print(await send_email(to="bob@example.com", subject="Hi"))
try:
    await send_email(to="eve@example.com", subject="Secrets")
except ToolDeniedError as e:
    print("denied:", e)
print(await asyncio.gather(*(send_email(to=f"u{i}@example.com", subject="news") for i in range(3))))
"""


def write(path: Path, code: str) -> Path:
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return path


@pytest.fixture
def mail_tools(tmp_path: Path) -> Path:
    return write(tmp_path / "mail_tools.py", MAIL_TOOLS)


class Terminal:
    """``progtc-kernel ARGS`` on a pseudo-terminal, as a person runs it: what it
    writes is read as it comes, and lines are typed once a question is shown."""

    def __init__(self, *args: str, cwd: Path = ROOT) -> None:
        self.master, slave = pty.openpty()
        # TERM=dumb: no styles, so that the screen is the plain text a person reads.
        env = {**os.environ, "TERM": "dumb", "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from progtc_kernel.cli import main; raise SystemExit(main())",
                *args,
            ],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            close_fds=True,
        )
        os.close(slave)
        self.screen = ""
        self.seen = 0  # how far expect() has read
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def expect(self, text: str) -> str:
        """Wait until ``text`` is on the screen after what was expected last; the
        screen from there on."""
        while text not in self.screen[self.seen :]:
            if not self._read():
                raise AssertionError(f"{text!r} never came; the screen:\n{self.screen}")
        start = self.seen
        self.seen = self.screen.index(text, self.seen) + len(text)
        return self.screen[start : self.seen]

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def finish(self) -> int:
        """Its exit status, once it exits; everything it wrote is on the screen."""
        while self._read():
            pass
        status = self.process.wait(timeout=60)
        os.close(self.master)
        return status

    def _read(self) -> bool:
        # No timeout of ours: pytest-timeout ends a test that hangs.
        select.select([self.master], [], [])
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # the process exited and closed the terminal
            return False
        self.screen += self.decoder.decode(chunk).replace("\r\n", "\n")
        return bool(chunk)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


QUESTION = "allow? [y]es / [n]o (n REASON to say why) / [a]llow for the rest of this run: "


# -- the terminal asks ----------------------------------------------------------------


def test_run_asks_at_the_terminal_allow_deny_and_allow_for_the_run(
    kernel_python: str, mail_tools: Path, tmp_path: Path
) -> None:
    script = write(tmp_path / "mail.py", MAIL_SCRIPT)
    terminal = Terminal("run", str(script), "--tools", str(mail_tools), "--python", kernel_python)
    try:
        asked = terminal.expect(QUESTION)
        assert "Sunny in Paris" in asked and "moved 5" in asked  # ran without asking
        assert "? send_email(to='bob@example.com', subject='Hi')  needs your approval" in asked
        terminal.type("y")
        assert "sent 'Hi' to bob@example.com" in terminal.expect(QUESTION)
        assert "send_email(to='eve@example.com'" in terminal.screen[-400:]
        terminal.type("n not to her")
        # The three calls of the gather wait together: asked one after another.
        batch = terminal.expect(QUESTION)
        assert "denied: tool 'send_email' was denied: not to her" in batch
        assert "send_email(to='u0@example.com', subject='news')" in batch
        assert "(2 more waiting after this one)" in batch
        terminal.type("a")  # allow for the rest of this run: the other two are not asked
        status = terminal.finish()
    finally:
        terminal.close()
    rest = terminal.screen[terminal.seen :]
    assert QUESTION not in rest
    assert (
        "[\"sent 'news' to u0@example.com\", \"sent 'news' to u1@example.com\", "
        "\"sent 'news' to u2@example.com\"]" in rest
    ), terminal.screen
    assert status == 0, terminal.screen


def test_an_answer_that_is_no_decision_is_asked_again(
    kernel_python: str, mail_tools: Path, tmp_path: Path
) -> None:
    script = write(
        tmp_path / "oslo.py", 'from tools import get_weather\nprint(await get_weather("Oslo"))\n'
    )
    terminal = Terminal(
        "run", str(script), "--tools", str(mail_tools), "--approve", "get_weather",
        "--python", kernel_python,
    )  # fmt: skip
    try:
        assert "? get_weather(city='Oslo')  needs your approval" in terminal.expect(QUESTION)
        terminal.type("maybe")
        terminal.expect("answer y (allow), n or n REASON (deny), or a (allow for this run)")
        terminal.expect(QUESTION)
        terminal.type("yes")
        terminal.expect("Sunny in Oslo")
        assert terminal.finish() == 0, terminal.screen
    finally:
        terminal.close()


def test_a_question_nobody_answers_is_denied_at_the_approval_timeout(
    kernel_python: str, mail_tools: Path, tmp_path: Path
) -> None:
    script = write(
        tmp_path / "wait.py",
        """\
        from tools import get_weather, ToolDeniedError
        try:
            await get_weather("Oslo")
        except ToolDeniedError as e:
            print("denied:", e.message)
        """,
    )
    terminal = Terminal(
        "run", str(script), "--tools", str(mail_tools), "--approve", "get_weather",
        "--approval-timeout", "1", "--python", kernel_python,
    )  # fmt: skip
    try:
        terminal.expect(QUESTION)  # and nobody answers
        terminal.expect("no longer waiting: the call was cancelled")
        terminal.expect("denied: no decision within 1 s (the approval timeout)")
        assert terminal.finish() == 0, terminal.screen
    finally:
        terminal.close()


def test_without_a_terminal_such_calls_are_denied_and_stderr_says_the_fix(
    kernel_python: str, mail_tools: Path
) -> None:
    done = progtc_kernel(
        "run", "-", "--tools", str(mail_tools), "--python", kernel_python, stdin=MAIL_SCRIPT
    )
    assert done.returncode == 1  # the gather's denials are not caught
    assert done.stdout.startswith("Sunny in Paris\nmoved 5\n")
    assert (
        "denied send_email: progtc-kernel run could not ask for approval of send_email: "
        "there is no terminal (stdin is not a TTY); run it in a terminal, or drop --approve"
        in done.stderr
    )
    assert "ToolDeniedError" in done.stderr


def test_approve_names_a_tool_there_is(mail_tools: Path) -> None:
    done = progtc_kernel("run", "-", "--tools", str(mail_tools), "--approve", "send_mail", stdin="")
    assert done.returncode == 2
    assert (
        "--approve send_mail: there is no tool of that name; the tools are "
        "get_weather, send_email, transfer" in done.stderr
    )


async def test_attach_asks_at_the_terminal(
    person: tuple[Any, Any],  # noqa: F811
    mail_tools: Path,
) -> None:
    km, client = person
    terminal = Terminal(
        "attach", "--existing", km.connection_file, "--tools", str(mail_tools), "--approve",
        "get_weather",
    )  # fmt: skip
    try:
        terminal.expect("serving ")
        cell = asyncio.ensure_future(
            run_cell(
                client,
                "from tools import get_weather, send_email, ToolDeniedError\n"
                "print(await get_weather('Rome'))\n"
                "try:\n"
                "    await send_email(to='bob@example.com', subject='Hi')\n"
                "except ToolDeniedError as e:\n"
                "    print('denied:', e)\n",
                timeout=120,
            )
        )
        assert "? get_weather(city='Rome')" in await asyncio.to_thread(terminal.expect, QUESTION)
        terminal.type("y")
        assert "send_email(to='bob@example.com'" in await asyncio.to_thread(
            terminal.expect, QUESTION
        )
        terminal.type("n: not today")
        assert await cell == "Sunny in Rome\ndenied: tool 'send_email' was denied: not today\n"
        terminal.process.send_signal(2)  # Ctrl-C detaches
        assert await asyncio.to_thread(terminal.finish) == 0
    finally:
        terminal.close()


# -- what a tools module says, and what a person types ----------------------------------


@pytest.mark.fast
def test_requires_approval_in_a_tools_module_is_a_policy_and_no_tool(tmp_path: Path) -> None:
    source = str(write(tmp_path / "mail_tools_policy.py", MAIL_TOOLS))
    assert list(load_tools([source])) == ["send_email", "get_weather", "transfer"]
    policy = approval_policy([source])
    assert policy is not None
    assert policy("send_email", {"to": "a", "subject": "b"})
    assert not policy("transfer", {"amount": 5}) and policy("transfer", {"amount": 500})
    names = write(
        tmp_path / "named_policy.py",
        """\
        def book(city: str) -> str: ...
        def look(city: str) -> str: ...
        __all__ = ["book", "look", "REQUIRES_APPROVAL"]
        REQUIRES_APPROVAL = {"book"}
        """,
    )
    assert list(load_tools([str(names)])) == ["book", "look"]
    named = approval_policy([str(names)])
    assert named is not None and named("book", {}) and not named("look", {})
    assert approval_policy([str(write(tmp_path / "none.py", "def f() -> int: ...\n"))]) is None


@pytest.mark.fast
def test_a_policy_that_names_no_tool_or_is_no_policy_says_what_to_do(tmp_path: Path) -> None:
    from progtc_kernel import ToolDefinitionError

    typo = write(tmp_path / "typo.py", "def book() -> None: ...\nREQUIRES_APPROVAL = {'bok'}\n")
    with pytest.raises(ToolDefinitionError, match=r"names 'bok', which is no tool of it; its "):
        approval_policy([str(typo)])
    wrong = write(tmp_path / "wrong.py", "def book() -> None: ...\nREQUIRES_APPROVAL = 'book'\n")
    with pytest.raises(ToolDefinitionError, match="must be a set of tool names, or a function"):
        approval_policy([str(wrong)])


@pytest.mark.fast
@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("y", Approval.allow()),
        (" Yes ", Approval.allow()),
        ("a", Approval.allow_for_run()),
        ("n", Approval.deny("send_email was denied at the terminal")),
        ("n too many", Approval.deny("too many")),
        ("no: not today", Approval.deny("not today")),
        ("", None),
        ("perhaps", None),
    ],
)
def test_what_a_person_types_decides(typed: str, expected: Approval | None) -> None:
    assert parse_answer(typed, "send_email") == expected
