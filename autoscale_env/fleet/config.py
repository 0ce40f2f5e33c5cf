"""Load and check ``data/fleet.toml``: how the phones of a fleet share the channel and the edge."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from autoscale_env.world import config, schemas
from autoscale_env.world.errors import ConfigError

FLEET_FILE = config.DATA_DIR / "fleet.toml"
SHARING = schemas.SHARING
DISCIPLINES = schemas.DISCIPLINES


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
    doc = schemas.validate(schemas.FleetFile, config.read_toml(file), file)
    d = doc.dcf
    dcf = DcfTiming(
        cw_min=d.cw_min, cw_max=d.cw_max, slot_us=d.slot_us, sifs_us=d.sifs_us,
        phy_header_us=d.phy_header_us, propagation_us=d.propagation_us,
        payload_bytes=d.payload_bytes, mac_header_bytes=d.mac_header_bytes, ack_bytes=d.ack_bytes,
        data_rate_mbps=d.data_rate_mbps, basic_rate_mbps=d.basic_rate_mbps)
    mixes = {}
    for name, m in doc.mixes.items():
        mix = Mix(devices=tuple(m.devices), scenarios=tuple(m.scenarios),
                  settings=tuple(m.settings))
        for s in mix.scenarios:
            config.get_scenario(s)
        for s in mix.settings:
            config.check_setting(s)
        mixes[name] = mix
    return FleetConfig(sharing=doc.channel.sharing,
                       p2p_shares_ap_channel=doc.channel.p2p_shares_ap_channel, dcf=dcf,
                       discipline=doc.edge.discipline,
                       load_edges=tuple(int(x) for x in doc.load_signal.edges),
                       mixes=mixes, path=str(file))
