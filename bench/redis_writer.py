#!/usr/bin/env python3
"""The Redis failover drills' client (bench/redis.sh and the Redis tests of crates/cli), on
redis-py from PyPI (scripts/pyenv.sh makes its virtualenv): one `SET w:<id> <id>` every
10 ms through one URL (holdfast's <db> master endpoint, or with --sentinel a
Sentinel-compatible address and --master the name, through redis-py's own Sentinel
support), reconnecting at the next tick after any error; every attempt is logged as
acknowledged (A) or failed (F: refused, or sent and then lost: unknown), so the drill
can tell the write-unavailability window and whether an acknowledged write went missing.
Output (TSV, time.time()):  A id t_send t_ack  |  F id t_send t_fail phase message
Stops when the stop file exists or after --max-seconds."""
import argparse, os, time
import redis
from redis.sentinel import Sentinel

ap = argparse.ArgumentParser()
ap.add_argument('--dsn', required=True, help='redis://user:pw@host:port, or host:port of a Sentinel with --sentinel')
ap.add_argument('--sentinel', action='store_true')
ap.add_argument('--master', default='cache')
ap.add_argument('--password', default=None, help='with --sentinel: the master password')
ap.add_argument('--out', required=True)
ap.add_argument('--stop', required=True)
ap.add_argument('--interval', type=float, default=0.010)
ap.add_argument('--max-seconds', type=float, default=300)
ap.add_argument('--first-id', type=int, default=1)
a = ap.parse_args()
out = open(a.out, 'w')
def w(*f):
    out.write('\t'.join(str(x) for x in f) + '\n'); out.flush()

def connect():
    if a.sentinel:
        host, port = a.dsn.rsplit(':', 1)
        s = Sentinel([(host, int(port))], socket_timeout=1, socket_connect_timeout=1)
        return s.master_for(a.master, password=a.password, username='default', socket_timeout=1,
                            socket_connect_timeout=1, retry_on_timeout=False)
    return redis.Redis.from_url(a.dsn, socket_timeout=1, socket_connect_timeout=1, retry_on_timeout=False)

r = None
t0 = time.time(); nid = a.first_id - 1; tick = 0
while time.time() - t0 < a.max_seconds and not os.path.exists(a.stop):
    tick += 1
    target = t0 + tick * a.interval
    now = time.time()
    if target < now:
        tick = int((now - t0) / a.interval) + 1
        target = t0 + tick * a.interval
    nid += 1
    ts = time.time()
    try:
        if r is None:
            r = connect()
        r.set(f'w:{nid}', nid)
        w('A', nid, f'{ts:.6f}', f'{time.time():.6f}')
    except Exception as e:
        w('F', nid, f'{ts:.6f}', f'{time.time():.6f}', type(e).__name__, str(e).strip().replace('\n', ' | ')[:200])
        try:
            if r is not None:
                r.close()
        except Exception:
            pass
        r = None
    d = target - time.time()
    if d > 0:
        time.sleep(d)
out.close()
