"""Where `status` looks for the running daemon's address when the config file does not load."""

from __future__ import annotations

from pathlib import Path

import pytest
from qbo_events import health_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('state_dir = "var/q"\n[log\n', "etc/var/q"),  # broken TOML: the line still counts
        ("state_dir = '/abs/q'  # comment\n[[instances]]\nname = \n", "/abs/q"),
        ('[log]\nstate_dir = "not/top/level"\n[oops\n', "etc/state"),  # inside a table
        ("typo = 1\n", "etc/state"),  # parses, names none: the default
        ('state_dir = "../q"\ntypo = 1\n', "q"),
    ],
)
def test_the_state_dir_a_broken_config_names(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "config.toml"
    path.write_text(text)
    assert health_address.state_dir_of(path) == (
        Path(expected) if expected.startswith("/") else tmp_path / expected
    )


def test_an_address_written_is_read_back_owner_only(tmp_path: Path) -> None:
    assert health_address.read(tmp_path) is None
    health_address.write(tmp_path, "127.0.0.1:8081")
    assert health_address.read(tmp_path) == "127.0.0.1:8081"
    assert (tmp_path / health_address.FILE).stat().st_mode & 0o777 == 0o600
    (tmp_path / health_address.FILE).write_text("not an address\n")
    assert health_address.read(tmp_path) is None
