"""The Node.js client of examples/node/, written from docs/contract.md alone, against the real
broker and `batchops consume` with the demo data (`make interop`; `make test` runs it when node
is on PATH)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.domain.webhooks import signature
from tests.e2e.conftest import ServeProcess
from tests.receiver import contract_snippet

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"


@pytest.mark.interop
async def test_the_node_example_keeps_the_contract(
    cli_env: dict[str, str], serve: Callable[..., ServeProcess]
) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node, "make interop needs node on PATH"
    assert npm, "make interop needs npm on PATH"
    install = await asyncio.to_thread(
        subprocess.run,
        [npm, "ci", "--no-audit", "--no-fund", "--silent"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    consumer = serve("consume")
    await consumer.wait_until_ready()

    run = await asyncio.to_thread(
        subprocess.run,
        [node, "interop.mjs"],
        cwd=EXAMPLE,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    print(run.stdout)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{consumer.log()[-3000:]}"
    assert run.stdout.strip().splitlines()[-1].endswith(" passed, 0 failed")


@pytest.mark.interop
def test_the_node_verification_code_of_the_contract_accepts_a_signature_and_refuses_others() -> (
    None
):
    node = shutil.which("node")
    assert node, "make interop needs node on PATH"
    body = '{"event_id": "e", "status": "completed"}'
    now = int(time.time())
    cases = [
        ("secret", signature("secret", now, body.encode()), body, True),
        ("other", signature("secret", now, body.encode()), body, False),
        ("secret", signature("secret", now, body.encode()), body + " ", False),
        ("secret", signature("secret", now - 3600, body.encode()), body, False),
    ]
    script = (
        contract_snippet("js")
        + "\n"
        + "\n".join(
            f"console.log(verify({json.dumps(s)}, {json.dumps(h)}, Buffer.from({json.dumps(b)})));"
            for s, h, b, _ in cases
        )
    )
    ran = subprocess.run(
        [node, "-e", script], check=False, capture_output=True, text=True, timeout=30
    )

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [str(expected).lower() for *_, expected in cases]
