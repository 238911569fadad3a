"""A suspended publisher's last-heard time (what a resumed audio track continues from): exact from
a video track's last packet where that is within the silence watch's check, else the watch's."""

from __future__ import annotations

from mediaserver.participant import last_heard_at_suspend


def test_a_recent_video_packet_is_the_exact_time() -> None:
    # the watch saw the count move at 101.25 (its check every 1.25 s): the last video packet at
    # 100.4 is when the connection was last heard
    assert last_heard_at_suspend(101.25, 1.25, [100.4, None]) == 100.4
    assert last_heard_at_suspend(101.25, 1.25, [100.1, 100.9]) == 100.9


def test_a_camera_turned_off_long_ago_does_not_count() -> None:
    # video stopped at 80 but audio went on: the watch's own time, not the camera's
    assert last_heard_at_suspend(101.25, 1.25, [80.0]) == 101.25


def test_audio_alone_or_no_watch() -> None:
    assert last_heard_at_suspend(101.25, 1.25, [None]) == 101.25
    assert last_heard_at_suspend(101.25, 1.25, []) == 101.25
    assert last_heard_at_suspend(None, 1.25, [100.4]) is None  # a relayed pair: not watched
