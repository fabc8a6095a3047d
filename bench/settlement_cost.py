"""What one settlement transaction costs the monitor: the settlement check's 1901 query
(within the day's sign-in, x-tif signed) against the lab's platform gateway on loopback,
beside curl posting the same message with the same headers in the same run. Prints the
median time per transaction for both and insmon's CPU per transaction (its client side:
building and signing the message, the socket, parsing the answer).

Usage: .venv/bin/python bench/settlement_cost.py [TRANSACTIONS]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.lab import HERE  # noqa: E402
from probes import settlement  # noqa: E402
from tests.conftest import free_port, wait_for  # noqa: E402


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp:
        control = Path(tmp) / "control.json"
        control.write_text("{}")
        port = free_port()
        server = subprocess.Popen([sys.executable, str(HERE / "gateway.py"), "127.0.0.1",
                                   str(port), str(control)], stdin=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/fsi/api/rsfComIfsService/callService"
            control.write_text(json.dumps({"dialect": "x-tif", "key": "paas-1",
                                           "secret": "token-1"}))
            cfg = settlement.Config(
                name="settle", kind="settlement", url=url, interval=60, timeout=5,
                fixmedins_code="H32010200001", fixmedins_name="某某市第一人民医院",
                mdtrtarea_admvs="320102", opter="001", opter_name="收费员",
                state_file=Path(tmp) / "sessions.json",
                gateway={"dialect": "x-tif", "key": "paas-1", "secret": {"value": "token-1"}})
            probe = settlement.Probe(cfg)
            link = cfg.links[0]
            wait_for(lambda: probe.transact(link, time.monotonic() + 2).answer.reason is None,
                     15, "the platform")  # and the day's sign-in
            ours, cpu = [], []
            for _ in range(count):
                c0, t0 = time.process_time(), time.perf_counter()
                result = probe.transact(link, time.monotonic() + 5)
                ours.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                assert result.answer.reason is None, result.answer.detail
            sign_no = probe.sessions.signed_in()[cfg.opter]
            curl = []
            for _ in range(count):
                body = json.dumps(probe.message(link, "1901", settlement.QUERY_INPUT, sign_no),
                                  ensure_ascii=False)
                headers = cfg.gateway.sign(url, "1901", body.encode()).headers
                done = subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", "-X", "POST",
                     "-H", "Content-Type: application/json;charset=utf-8",
                     *(arg for k, v in headers.items() for arg in ("-H", f"{k}: {v}")),
                     "--data-binary", body, url],
                    capture_output=True, text=True, check=True, timeout=10)
                curl.append(float(done.stdout))
        finally:
            server.terminate()
            server.wait(10)
    print(f"settlement transaction (1901 query, x-tif signed) on loopback, {count} each:")
    print(f"  insmon: median {statistics.median(ours) * 1000:.2f} ms, CPU "
          f"{statistics.mean(cpu) * 1000:.2f} ms per transaction")
    print(f"  curl (time_total, its process start not counted): median "
          f"{statistics.median(curl) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
