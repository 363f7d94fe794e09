#!/usr/bin/env python3
"""The failover drills' client (bench/postgres.sh and the fault tests of crates/cli), on
psycopg 3 from PyPI (scripts/pyenv.sh makes its virtualenv): one INSERT every 10 ms through one connection URL
(holdfast's <db>-rw), autocommit, reconnecting at the next tick after any error; every
attempt is logged as acknowledged (A) or failed (F), so the drill can tell the
write-unavailability window and whether an acknowledged write went missing.
Output (TSV, time.time()):  A id t_send t_ack  |  F id t_send t_fail phase message
Stops when the stop file exists or after --max-seconds."""
import argparse, os, time
import psycopg

ap = argparse.ArgumentParser()
ap.add_argument('--dsn', required=True)
ap.add_argument('--out', required=True)
ap.add_argument('--stop', required=True)
ap.add_argument('--interval', type=float, default=0.010)
ap.add_argument('--max-seconds', type=float, default=300)
ap.add_argument('--first-id', type=int, default=1, help='the id of the first write (several writers into one table)')
a = ap.parse_args()
out = open(a.out, 'w')
def w(*f):
    out.write('\t'.join(str(x) for x in f) + '\n'); out.flush()
conn = cur = None
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
    if conn is None:
        try:
            conn = psycopg.connect(a.dsn, connect_timeout=1, autocommit=True)
            cur = conn.cursor()
        except Exception as e:
            w('F', nid, f'{ts:.6f}', f'{time.time():.6f}', 'connect', str(e).strip().replace('\n', ' | ')[:200])
            conn = None
    if conn is not None:
        try:
            cur.execute('INSERT INTO t(id) VALUES (%s)', (nid,))
            w('A', nid, f'{ts:.6f}', f'{time.time():.6f}')
        except Exception as e:
            w('F', nid, f'{ts:.6f}', f'{time.time():.6f}', 'exec', str(e).strip().replace('\n', ' | ')[:200])
            try:
                conn.close()
            except Exception:
                pass
            conn = None
    d = target - time.time()
    if d > 0:
        time.sleep(d)
out.close()
