"""py-spy sampling of the service under load, and a text summary of its collapsed stacks.

    python -m bench.profile FILE.txt [--top 25]

FILE is what `python -m bench --py-spy DIR` leaves in DIR (py-spy's `raw` format: one line
per distinct stack, `frame;frame;…;leaf COUNT`). Percentages are of the samples taken while
the process was running Python (py-spy leaves idle samples out), so "self" says where the CPU
of the service's one thread goes and "total" which calls it went through.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


class PySpy:
    """`py-spy record` attached to running processes until `stop()`."""

    def __init__(self, pids: list[int], directory: Path, rate: int = 100) -> None:
        beside = Path(sys.executable).with_name("py-spy")
        executable = str(beside) if beside.exists() else shutil.which("py-spy")
        if executable is None:
            raise FileNotFoundError("py-spy is not installed (.venv/bin/pip install py-spy)")
        directory.mkdir(parents=True, exist_ok=True)
        self.outputs = [directory / f"profile-{pid}.txt" for pid in pids]
        self._processes = [
            subprocess.Popen(
                [
                    executable,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--function",
                    "--rate",
                    str(rate),
                    # Sampling without pausing the service keeps its throughput close to an
                    # unprofiled run; a torn stack now and then does not move the totals.
                    "--nonblocking",
                    "--output",
                    str(output),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for pid, output in zip(pids, self.outputs, strict=True)
        ]

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGINT makes py-spy write its file; wait for that (bounded)."""
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self._processes:
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)
            except TimeoutError:
                process.kill()
                process.wait(5)


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['function']} ({match['file']})"


def summarise(path: Path, top: int = 25) -> str:
    """Top functions by self and by total (inclusive) share of samples, and by package."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    package_counts: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        samples += count
        self_counts[frames[-1]] += count
        package_counts[_package(frames[-1])] += count
        ours[next((f for f in reversed(frames) if _package(f) in _OURS), _NONE_OF_OURS)] += count
        for name in set(frames):
            total_counts[name] += count
    if not samples:
        return f"{path}: no samples"

    def table(title: str, counts: Counter[str], rows: int) -> list[str]:
        return [
            f"{title}:",
            *(f"  {100 * n / samples:5.1f}%  {name}" for name, n in counts.most_common(rows)),
        ]

    return "\n".join(
        [
            f"{path}: {samples} samples",
            *table("self (leaf package)", package_counts, 15),
            *table("by the innermost batchops frame on the stack", ours, top),
            *table("self", self_counts, top),
            *table("total", total_counts, top),
        ]
    )


_OURS = frozenset({"consumer", "publisher", "contracts"})
# py-spy shows code that SQLAlchemy runs in a greenlet as a stack of its own, cut off from the
# coroutine that called it: such samples have no batchops frame.
_NONE_OF_OURS = "(no batchops frame: greenlet stacks of SQLAlchemy sessions, event loop)"


def _package(frame: str) -> str:
    """The top-level package (or stdlib module) of a frame's file, e.g. `sqlalchemy`."""
    match = _FRAME.match(frame)
    file = match["file"] if match else frame
    return file.split("/", 1)[0].removesuffix(".py")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for file in args.files:
        print(summarise(file, args.top))


if __name__ == "__main__":
    main()
