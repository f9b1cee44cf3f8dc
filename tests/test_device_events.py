"""
``DeviceEvents``: inotify on a by-id directory wakes a wait when one of the
volume's links comes or goes, and only then.
"""

import os

import pytest

from blockmover.backends.deviceevents import DeviceEvents
from blockmover.backends.devices import link_names

VOLUME = "3f2a1c9e-7b4d-4e8a-9c1f-0d5e6b7a8c9d"
OTHER = "0b0b0b0b-7b4d-4e8a-9c1f-0d5e6b7a8c9d"


@pytest.fixture
def by_id(tmp_path):
    directory = tmp_path / "by-id"
    directory.mkdir()
    return str(directory)


def test_a_link_coming_and_going_wakes(by_id):
    link = os.path.join(by_id, link_names(VOLUME)[0])
    with DeviceEvents(by_id, link_names(VOLUME)) as events:
        assert events.wait(0) is False
        os.symlink("/dev/null", link)
        assert events.wait(5.0) is True
        # Drained: the same event does not wake twice.
        assert events.wait(0.01) is False
        os.remove(link)
        assert events.wait(5.0) is True


def test_a_link_renamed_into_place_wakes(by_id):
    # How udev (and the emulator) make a link: a temporary name, renamed.
    temporary = os.path.join(by_id, ".tmp-link")
    os.symlink("/dev/null", temporary)
    with DeviceEvents(by_id, link_names(VOLUME)) as events:
        os.rename(temporary, os.path.join(by_id, link_names(VOLUME)[0]))
        assert events.wait(5.0) is True


def test_other_volumes_links_do_not_wake(by_id):
    with DeviceEvents(by_id, link_names(VOLUME)) as events:
        for name in link_names(OTHER):
            os.symlink("/dev/null", os.path.join(by_id, name))
        assert events.wait(0.05) is False


def test_a_missing_directory_cannot_be_watched(tmp_path):
    with pytest.raises(OSError) as raised:
        DeviceEvents(str(tmp_path / "absent"), ["x"]).__enter__()
    assert "absent" in str(raised.value)
