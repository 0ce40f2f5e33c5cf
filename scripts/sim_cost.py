"""Where a simulated request's time goes: the sim's compiled generator against its three parts.

    python scripts/sim_cost.py

One world (Mi 8 Pro, non-streaming, dynamic), one thread, 200,000 requests, the best of 5 runs,
nanoseconds per request. The parts are timed in loops of their own (each sums its results so the
compiler keeps the work), compiled as the generator's loops are (``batch_loop``: no reference
counting), so they add up to more than the generator, where they overlap:

* ``noise``: the request's lognormal noise factors (one per target and one per link);
* ``context``: the network, the co-running app and its load, both links' signal;
* ``outcomes``: every target's latency and energy (``rules.request_outcomes``).
"""
import time, numpy as np, numba
from autoscale_env.world.compiled import batch_loop
from autoscale_env.backends import sim as S
from autoscale_env.world.rules import request_outcomes
numba.set_num_threads(1)
b = S.SimBackend("mi8pro", "non_streaming", "dynamic", block_size=1024)
proc, world = b.processes, b.model.tables
T = len(b.targets); N = 200_000

@batch_loop()
def draws_only(proc, key, n, noise):
    acc = 0.0
    for i in range(n):
        S.request_noise(proc, key, i, noise)
        acc += noise[0]
    return acc

@batch_loop()
def context_only(proc, key, n, app, mean_dbm, drop_left):
    acc = 0.0
    for i in range(n):
        segment, wifi_mean, p2p_mean = S.advance_processes(proc, key, i, app, mean_dbm, drop_left)
        net, cpu, mem, wifi, p2p = S.request_context(proc, key, i, segment, wifi_mean, p2p_mean)
        acc += net + cpu + mem + wifi + p2p
    return acc

@batch_loop()
def outcomes_only(world, n, noise, lat, en):
    acc = 0.0
    for i in range(n):
        request_outcomes(world, i % 3, 20.0 + (i % 50), 30.0, -60.0 - (i % 20), -55.0, noise, lat, en)
        acc += lat[0] + en[T - 1]
    return acc

def best(f, reps=5):
    f(); t = []
    for _ in range(reps):
        s = time.perf_counter(); f(); t.append(time.perf_counter() - s)
    return min(t) / N * 1e9

st = S.SimState(1); worlds = np.array([0])
def full():
    b.reset_worlds([np.random.default_rng(0)], st, worlds); b.generate(st, worlds, n=N, threads=1)
def blocks():
    b.reset(np.random.default_rng(0)); n = 0
    while n < N: n += len(b.next_block())
noise = np.ones(T + 2); key = np.uint64(12345)
lat, en = np.empty(T), np.empty(T)
print("ns per request (min of 5):")
print(f"  next_block x 1024 (bench path): {best(blocks):6.1f}")
print(f"  generate, one call of {N}:    {best(full):6.1f}")
print(f"  noise draws ({T + 2} lognormals): {best(lambda: draws_only(proc, key, N, noise)):6.1f}")
print(f"  context (network, app, 2 signals): {best(lambda: context_only(proc, key, N, np.zeros(1, np.int64), np.zeros(2), np.zeros(2, np.int64))):6.1f}")
print(f"  outcomes ({T} targets):        {best(lambda: outcomes_only(world, N, noise, lat, en)):6.1f}")
