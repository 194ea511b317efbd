"""msixd.toml: every broken file is one ConfigError naming the file and, where it can, the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msixd.config import Config, ConfigError, load, parse

DEEP = 5000


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ('log_level = "info"\nbanned_cpus = "' + "1" * DEEP + '"\n', 2, "too long"),
        ('log_level = "info"\n\nlog_format = ' + "1" * DEEP + "\n", 3, "digits"),
        ('log_level = "info"\nbanned_cpus = ' + "[" * DEEP + "]" * DEEP + "\n", 2, "nested"),
        ("banned_cpus = [\n" + "[\n" * DEEP + "]\n" * (DEEP + 1), 101, "nested"),
        ("x = " + "{a = " * DEEP + "1" + "}" * DEEP + "\n", 1, "nested"),
        # Brackets in strings and comments are text: the line named is the one that nests.
        ('socket_group = "' + "[" * 200 + '"\n# ' + "[" * 200 + '\nx = """\n' + "[" * 200 + '\n"""\nbanned_cpus = '
         + "[" * DEEP + "]" * DEEP + "\n", 6, "nested"),
        ('socket = "/a"\nmetrics_listen = "127.0.0.1:99999"\n', 2, "port must be 1 to 65535"),
        ('metrics_listen = "127.0.0.1:0"\n', 1, "port must be 1 to 65535"),
        ('tcp_listen = "0.0.0.0:70000"\ntls_cert = "c"\ntls_key = "k"\ntls_client_ca = "ca"\n', 1,
         "port must be 1 to 65535"),
    ],
)
def test_hostile_text_is_one_error_with_its_line(text: str, line: int, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text, "/etc/msixd/msixd.toml")
    message = str(err.value)
    assert message.startswith(f"/etc/msixd/msixd.toml, line {line}: ") and says in message, message
    assert len(message) < 400, "the error quotes the input, it does not repeat it"


def test_listen_addresses_in_range_are_taken() -> None:
    config = parse('metrics_listen = "[::1]:65535"\n')
    assert config.metrics_listen == "[::1]:65535"


def test_invalid_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "msixd.toml"
    path.write_bytes(b'log_level = "info"\n# caf\xe9\nbanned_cpus = "1"\n')
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}, line 2: ") and "UTF-8" in str(err.value)


def test_an_absent_file_is_the_defaults_unless_it_is_required(tmp_path: Path) -> None:
    assert load(tmp_path / "absent.toml") == Config()
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "absent.toml", missing_ok=False)


def test_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path)):
        load(tmp_path)


# Lines that are valid, wrong, or hostile, in any order and number.
lines = st.one_of(
    st.sampled_from(['log_level = "debug"', 'banned_cpus = "0-1"', "[table]", "# comment", "", 'x = """a\nb"""']),
    st.integers(1, 6000).map(lambda n: f"banned_cpus = {'[' * n}{']' * n}"),
    st.integers(4000, 6000).map(lambda n: f"log_level = {'9' * n}"),
    st.integers(1, 6000).map(lambda n: f'banned_cpus = "{"7" * n}"'),
    st.integers(1, 3000).map(lambda n: "a = " + "{b = " * n + "1" + "}" * n),
    st.text(max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, max_size=6), st.binary(max_size=4), st.integers(0, 200))
def test_any_file_loads_or_is_one_config_error(tmp_path_factory: pytest.TempPathFactory, text_lines: list[str],
                                               junk: bytes, at: int) -> None:
    data = "\n".join(text_lines).encode(errors="surrogatepass")  # a lone surrogate is invalid UTF-8 too
    data = data[:at] + junk + data[at:]
    path = tmp_path_factory.mktemp("config") / "msixd.toml"
    path.write_bytes(data)
    try:
        load(path)
    except ConfigError as err:
        assert str(err).startswith(str(path))


LEASES = """\
log_level = "info"

[[lease]]
devices = ["00:05.0", "8086:10D3"]
users = ["root", 4242]
groups = ["nogroup"]
device_fd = true

[[lease]]
devices = ["0000:00:09.0"]
users = [4243]
"""


def test_lease_tables_become_rules_with_canonical_devices_and_ids() -> None:
    first, second = parse(LEASES).leases
    assert first.devices == ("0000:00:05.0", "8086:10d3") and first.device_fd
    assert first.uids == frozenset({0, 4242}) and first.gids == frozenset({65534}) and first.line == 3
    assert second.devices == ("0000:00:09.0",) and not second.device_fd and second.line == 9
    assert first.covers("0000:00:07.0", "8086:10d3") and not second.covers("0000:00:07.0", "8086:10d3")
    assert second.names(4243, frozenset()) and first.names(1, frozenset({65534})) and not second.names(1, frozenset())


@pytest.mark.parametrize(
    ("table", "line", "says"),
    [
        ('devices = ["x"]\nusers = [1]\n', 3, "invalid PCI address"),
        ('devices = []\nusers = [1]\n', 3, "needs devices"),
        ('devices = ["00:01.0"]\n', 2, "must name users or groups"),
        ('devices = ["00:01.0"]\nusers = ["no-such-user-here"]\n', 4, "no user named"),
        ('devices = ["00:01.0"]\ngroups = ["no-such-group-here"]\n', 4, "no group named"),
        ('devices = ["00:01.0"]\nusers = [-1]\n', 4, "not a valid id"),
        ('devices = ["00:01.0"]\nusers = [true]\n', 4, "names or numbers"),
        ('devices = ["00:01.0"]\nusers = [1]\ndevice_fd = "yes"\n', 5, "true or false"),
        ('devices = ["00:01.0"]\nusers = [1]\ncolour = 1\n', 5, "unknown [[lease]] key 'colour'"),
    ],
)
def test_a_bad_lease_table_names_its_line(table: str, line: int, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse('log_level = "info"\n[[lease]]\n' + table, "/etc/msixd/msixd.toml")
    assert str(err.value).startswith(f"/etc/msixd/msixd.toml, line {line}: ") and says in str(err.value), err.value


def test_lease_rules_are_applied_by_a_reload() -> None:
    applied, restart = Config().reload_changes(parse(LEASES))
    assert "leases" in applied and "leases" not in restart
