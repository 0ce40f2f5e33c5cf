"""Arguments of the fleet constructors: which phones, which rules (no PettingZoo needed)."""

from __future__ import annotations

import numpy as np

from autoscale_env.world.errors import UnknownNameError
from autoscale_env.fleet.config import load_fleet_config
from autoscale_env.fleet.core import FleetCore


#: Memory one phone of the fleet costs (its world, backend, block buffers and per-phone arrays):
#: 10**5 phones took over 9 GB, ~96 KB each.
PHONE_BYTES = 96 * 1024
#: Memory a fleet may take.
MAX_FLEET_BYTES = 1 << 30
#: Most phones in one fleet (1 GiB / 96 KiB).
MAX_PHONES = MAX_FLEET_BYTES // PHONE_BYTES


def make_core(num_phones: int = 1, device=None, scenario=None, setting=None, *, mix=None,
              fleet_config=None, sharing=None, discipline=None, p2p_shares_ap_channel=None,
              **kwargs) -> FleetCore:
    """The array fleet (:class:`FleetCore`) with :func:`parallel_env`'s arguments."""
    if isinstance(num_phones, bool) or not isinstance(num_phones, (int, np.integer)) or num_phones < 1:
        raise ValueError(f"num_phones must be an integer >= 1, got {num_phones!r}")
    if num_phones > MAX_PHONES:
        raise ValueError(f"num_phones {num_phones} is over the limit of {MAX_PHONES}: each phone "
                         f"costs ~{PHONE_BYTES // 1024} KiB, so it would need "
                         f"~{num_phones * PHONE_BYTES / 2**30:.3g} GiB (limit "
                         f"{MAX_FLEET_BYTES / 2**30:g} GiB)")
    fleet = load_fleet_config(fleet_config)
    changes = {k: v for k, v in (("sharing", sharing), ("discipline", discipline),
                                 ("p2p_shares_ap_channel", p2p_shares_ap_channel)) if v is not None}
    if changes:
        fleet = fleet.replace(**changes)
    n = int(num_phones)
    if mix is not None:
        if device is not None or scenario is not None or setting is not None:
            raise ValueError("pass either mix= or device/scenario/setting, not both")
        if mix not in fleet.mixes:
            raise UnknownNameError("fleet mix", mix, fleet.mixes)
        phones = [fleet.mixes[mix].phone(k) for k in range(n)]
    else:
        cols = [_per_phone(name, value, default, n) for name, value, default in (
            ("device", device, "mi8pro"), ("scenario", scenario, "non_streaming"),
            ("setting", setting, "dynamic"))]
        phones = list(zip(*cols))
    return FleetCore(phones, fleet=fleet, **kwargs)


def _per_phone(name: str, value, default: str, n: int) -> list[str]:
    if value is None:
        value = default
    if isinstance(value, str):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} must be one name or {n} names (one per phone), got {len(value)}")
    return value
