"""The plain and JSON views: whole lines even when every slot reports at once; a pause shown and reported."""
from __future__ import annotations

import json
import threading
import time

from autoresearch.apps.live_view import PlainView

THREADS, EVENTS = 6, 60


class SlowStream:
    """A stream that gives other threads the GIL inside every write, as a busy pipe does."""

    def __init__(self):
        self.chunks: list[str] = []

    def write(self, text: str) -> int:
        time.sleep(0.0002)
        self.chunks.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def _hammer(view: PlainView) -> None:
    start = threading.Barrier(THREADS)

    def report(n: int) -> None:
        start.wait()
        for i in range(EVENTS):
            view.message(f"slot {n} event {i}")

    threads = [threading.Thread(target=report, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_json_events_from_many_threads_are_whole_lines():
    stream = SlowStream()
    _hammer(PlainView(as_json=True, stream=stream))
    lines = "".join(stream.chunks).splitlines()
    assert len(lines) == THREADS * EVENTS
    texts = {json.loads(line)["text"] for line in lines}  # a line of two events would not parse
    assert texts == {f"slot {n} event {i}" for n in range(THREADS) for i in range(EVENTS)}


def test_plain_lines_from_many_threads_are_whole_lines():
    stream = SlowStream()
    _hammer(PlainView(stream=stream))
    lines = "".join(stream.chunks).splitlines()
    assert sorted(lines) == sorted(f"slot {n} event {i}" for n in range(THREADS) for i in range(EVENTS))


def test_a_pause_is_shown_and_reported():
    import io

    from rich.console import Console

    from autoresearch.apps.live_view import LiveView
    from autoresearch.core.records import Pause

    pause = Pause(id=1, tag="t", source="dashboard", started_at=time.time())
    stream = SlowStream()
    view = PlainView(as_json=True, stream=stream)
    view.paused(pause)
    view.paused(None)
    events = [json.loads(line) for line in "".join(stream.chunks).splitlines()]
    assert [e["event"] for e in events] == ["paused", "resumed"] and events[0]["source"] == "dashboard"
    console = Console(file=io.StringIO(), width=160, record=True)
    live = LiveView("autoresearch · toy · t", "score", console=console)
    live.paused(pause)
    console.print(live)
    shown = console.export_text()
    assert "· paused" in shown and "paused since" in shown and "nothing new starts" in shown
    assert "waiting for the agent" not in shown
    live.paused(None)
    console.print(live)
    shown = console.export_text()
    assert "resumed" in shown and "waiting for the agent" in shown and "· paused" not in shown
