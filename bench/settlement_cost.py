"""What one settlement transaction costs the monitor: the settlement check's 9001 sign-in
against the lab's platform gateway on loopback, beside curl posting the same message in
the same run. Prints the median time per transaction for both and insmon's CPU per
transaction (its client side: building the message, the socket, parsing the answer).

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
            url = f"http://127.0.0.1:{port}/fsi/api/fsi/signIn"
            cfg = settlement.Config(
                name="settle", kind="settlement", url=url, interval=60, timeout=5,
                fixmedins_code="H32010200001", fixmedins_name="某某市第一人民医院",
                mdtrtarea_admvs="320102", opter="001", opter_name="收费员")
            probe = settlement.Probe(cfg)
            link = cfg.links[0]
            wait_for(lambda: settlement.transact(cfg, link, probe._message(),
                                                 time.monotonic() + 2).reason is None,
                     15, "the platform")
            ours, cpu = [], []
            for _ in range(count):
                message = probe._message()
                c0, t0 = time.process_time(), time.perf_counter()
                outcome = settlement.transact(cfg, link, message, time.monotonic() + 5)
                ours.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                assert outcome.reason is None, outcome.detail
            body = json.dumps(probe._message(), ensure_ascii=False)
            curl = []
            for _ in range(count):
                done = subprocess.run(
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", "-X", "POST",
                     "-H", "Content-Type: application/json;charset=utf-8", "--data-binary",
                     body, url], capture_output=True, text=True, check=True, timeout=10)
                curl.append(float(done.stdout))
        finally:
            server.terminate()
            server.wait(10)
    print(f"settlement transaction (9001 sign-in) on loopback, {count} each:")
    print(f"  insmon: median {statistics.median(ours) * 1000:.2f} ms, CPU "
          f"{statistics.mean(cpu) * 1000:.2f} ms per transaction")
    print(f"  curl (time_total, its process start not counted): median "
          f"{statistics.median(curl) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
