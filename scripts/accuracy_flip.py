"""What flips when an INT8 accuracy drop that sits on a scenario's tolerance moves by 0.01 pt.

For every phone and every catalog network whose INT8 drop is within 0.1 pt of the scenario's
tolerance, prints the oracle's noise-free target (no co-running load, regular and weak Wi-Fi) with
the tolerance as shipped and 0.01 pt tighter. Run: ``python scripts/accuracy_flip.py``.
"""

import numpy as np

from autoscale_env.world import config
from autoscale_env.backends.sim import SimBackend
from autoscale_env.world.reward import reward
from autoscale_env.world.rules import oracle_actions


def best(sim, scenario, network, tolerance, **conditions):
    block = sim.expected(network, **conditions)
    net = block.network
    target = np.array([w.accuracy["fp32"] - tolerance for w in sim.workloads])
    r, _, _ = reward(config.get_reward_preset("energy"), latency_ms=block.latency_ms,
                     energy_mj=block.energy_mj, accuracy=block.accuracy,
                     reference_energy_mj=sim.reference_energy_mj[net][:, None],
                     qos_ms=scenario.qos_ms, accuracy_target=target[net][:, None])
    return str(sim.targets[int(oracle_actions(r)[0])])


def main():
    workloads = config.load_workloads()
    print("| phone | scenario | network | INT8 drop (pt) | tolerance (pt) | signal | target | "
          "target at tolerance - 0.01 pt |")
    print("|---|---|---|---|---|---|---|---|")
    for scenario in config.load_scenarios().values():
        for name in scenario.networks:
            w = workloads[name]
            drop = w.accuracy["fp32"] - w.accuracy["int8"]
            if abs(drop - scenario.accuracy_tolerance) > 0.001 + 1e-9:
                continue
            for phone in config.device_names("phone"):
                sim = SimBackend(phone, scenario.name, "static")
                for label, rssi in (("regular", -57.0), ("weak", -81.0)):  # settings.toml static levels
                    c = dict(rssi_wifi_dbm=rssi, rssi_p2p_dbm=rssi)
                    a = best(sim, scenario, name, scenario.accuracy_tolerance, **c)
                    b = best(sim, scenario, name, scenario.accuracy_tolerance - 1e-4, **c)
                    print(f"| {phone} | {scenario.name} | {name} | {100 * drop:.2f} | "
                          f"{100 * scenario.accuracy_tolerance:.2f} | {label} | {a} | {b} |")


if __name__ == "__main__":
    main()
