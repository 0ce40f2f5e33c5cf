"""Load and check ``data/fleet.toml``: how the phones of a fleet share the channel and the edge."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from autoscale_env.world import config
from autoscale_env.world.errors import ConfigError

FLEET_FILE = config.DATA_DIR / "fleet.toml"
SHARING = ("equal_throughput", "equal_airtime")
DISCIPLINES = ("fifo", "processor_sharing")


@dataclass(frozen=True)
class DcfTiming:
    """802.11 DCF parameters of Bianchi's saturation-throughput model (``[dcf]``)."""

    cw_min: int
    cw_max: int
    slot_us: float
    sifs_us: float
    phy_header_us: float
    propagation_us: float
    payload_bytes: int
    mac_header_bytes: int
    ack_bytes: int
    data_rate_mbps: float
    basic_rate_mbps: float


@dataclass(frozen=True)
class Mix:
    """A recipe for a fleet: phone ``k`` gets ``devices[k % D]``, ``scenarios[(k // D) % S]``,
    ``settings[(k // (D * S)) % G]`` (a cycle over the cartesian product)."""

    devices: tuple[str, ...]
    scenarios: tuple[str, ...]
    settings: tuple[str, ...]

    def phone(self, k: int) -> tuple[str, str, str]:
        """(device, scenario, setting) of phone ``k``."""
        d, s = len(self.devices), len(self.scenarios)
        return (self.devices[k % d], self.scenarios[(k // d) % s],
                self.settings[(k // (d * s)) % len(self.settings)])


@dataclass(frozen=True)
class FleetConfig:
    """Everything ``fleet.toml`` says (see the file for meanings and sources)."""

    sharing: str
    p2p_shares_ap_channel: bool
    dcf: DcfTiming
    discipline: str
    load_edges: tuple[int, ...]
    mixes: dict[str, Mix]
    path: str = ""

    def replace(self, **changes) -> FleetConfig:
        """A copy with some fields changed (checked like the file)."""
        from dataclasses import replace
        new = replace(self, **changes)
        if new.sharing not in SHARING:
            raise ConfigError(f"channel sharing {new.sharing!r} is not one of {', '.join(SHARING)}")
        if new.discipline not in DISCIPLINES:
            raise ConfigError(f"edge discipline {new.discipline!r} is not one of "
                              f"{', '.join(DISCIPLINES)}")
        return new


@lru_cache(maxsize=None)
def load_fleet_config(path: str | None = None) -> FleetConfig:
    """Parse and check ``fleet.toml`` (the bundled one by default); errors name file and field."""
    file = Path(path) if path else FLEET_FILE
    top = config.read_table(file)  # the project's checked TOML reader
    ch = top.table("channel")
    sharing = ch.str("sharing")
    if sharing not in SHARING:
        ch.fail("sharing", f"must be one of {', '.join(SHARING)}, got {sharing!r}")
    shares = ch.boolean("p2p_shares_ap_channel")
    ch.source()
    ch.done()
    d = top.table("dcf")
    dcf = DcfTiming(
        cw_min=d.integer("cw_min", minimum=1), cw_max=d.integer("cw_max", minimum=1),
        slot_us=d.number("slot_us", positive=True), sifs_us=d.number("sifs_us", positive=True),
        phy_header_us=d.number("phy_header_us"), propagation_us=d.number("propagation_us"),
        payload_bytes=d.integer("payload_bytes", minimum=1),
        mac_header_bytes=d.integer("mac_header_bytes"), ack_bytes=d.integer("ack_bytes"),
        data_rate_mbps=d.number("data_rate_mbps", positive=True),
        basic_rate_mbps=d.number("basic_rate_mbps", positive=True))
    if dcf.cw_max < dcf.cw_min:
        d.fail("cw_max", f"must be >= cw_min ({dcf.cw_min}), got {dcf.cw_max}")
    d.source()
    d.done()
    e = top.table("edge")
    discipline = e.str("discipline")
    if discipline not in DISCIPLINES:
        e.fail("discipline", f"must be one of {', '.join(DISCIPLINES)}, got {discipline!r}")
    e.source()
    e.done()
    ls = top.table("load_signal")
    edges = ls.numbers("edges", minimum=1)
    if any(x != int(x) for x in edges) or list(edges) != sorted(set(edges)):
        ls.fail("edges", f"must be increasing whole counts >= 1, got {list(edges)}")
    ls.source()
    ls.done()
    mixes = {}
    mt = top.table("mixes")
    for name in mt.data:
        m = mt.table(name)
        mix = Mix(devices=m.strings("devices"), scenarios=m.strings("scenarios"),
                  settings=m.strings("settings"))
        for s in mix.scenarios:
            config.get_scenario(s)
        for s in mix.settings:
            config.check_setting(s)
        m.source()
        m.done()
        mixes[name] = mix
    top.done()
    return FleetConfig(sharing=sharing, p2p_shares_ap_channel=shares, dcf=dcf,
                       discipline=discipline, load_edges=tuple(int(x) for x in edges),
                       mixes=mixes, path=str(file))
