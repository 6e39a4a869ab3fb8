"""A custom handler that kills its own process: the poison message of the fault suite.

The consumer process finds it through an entry point of the `batchops.handlers` group, from a
`*.dist-info` directory the test writes and puts on PYTHONPATH (see `install`); nothing is
installed into the virtualenv and no product file changes.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from batchops_example_handlers import append_order_note

from consumer.service_layer.handlers import OperationContext
from contracts import Operation

HANDLER = "crash_on_marker"
MARKER = "CRASH"


async def crash_on_marker(ctx: OperationContext, operation: Operation) -> dict[str, Any]:
    """append_order_note, except that a note reading MARKER kills the process (SIGKILL)."""
    if operation.data.get("text") == MARKER:
        os.kill(os.getpid(), signal.SIGKILL)
    return await append_order_note(ctx, operation)


def install(directory: Path) -> Path:
    """Write the distribution metadata registering the handler into `directory`."""
    dist_info = directory / "batchops_fault_plugin-0.1.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: batchops-fault-plugin\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[batchops.handlers]\n{HANDLER} = {__name__}:{crash_on_marker.__name__}\n",
        encoding="utf-8",
    )
    return directory
