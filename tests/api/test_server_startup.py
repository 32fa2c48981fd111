"""What `journeyman api` does once it has started, before it serves (journeyman/api/server.py)."""

from __future__ import annotations

import gc

from journeyman.api import server


def test_the_start_s_objects_are_left_out_of_full_collections() -> None:
    """The heap the start built is frozen: the garbage collector's full collections do
    not walk it again while requests wait (issue 19); garbage made before is collected,
    not frozen."""

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    class Built:
        pass

    kept = Built()
    garbage = Cycle()
    del garbage
    gc.unfreeze()
    assert any(o is kept for o in gc.get_objects())
    try:
        server._freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert not any(isinstance(o, Cycle) for o in gc.get_objects())  # collected first
        assert all(o is not kept for o in gc.get_objects())  # frozen: not tracked any more
    finally:
        gc.unfreeze()
