"""Client of the VIP app's REST API (used by experiments, tests and `lblab vip`)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from topologies.system import LblabError


class VipApi:
    # A change waits until the switches confirm the new flows (barrier); on a slow machine
    # (a TCG guest) that has taken over 10 s.
    timeout_s = 30.0

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")

    def call(self, method: str, path: str, body: dict | None = None,
             expect_ok: bool = True) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status, text = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        except urllib.error.URLError as exc:
            raise LblabError(f"VIP controller not reachable at {self.base}: {exc.reason}") \
                from None
        except TimeoutError:  # the answer started but did not finish in time
            raise LblabError(f"VIP controller at {self.base} did not answer {method} {path} "
                             f"within {self.timeout_s:g} s (overloaded machine? see the "
                             "run's controller.log)") from None
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = text.decode(errors="replace")
        if expect_ok and status != 200:
            error = payload.get("error") if isinstance(payload, dict) else payload
            raise LblabError(f"{method} {path}: HTTP {status}: {error}")
        return status, payload

    def vips(self) -> list:
        return self.call("GET", "/vips")[1]

    def vip(self, name: str) -> dict:
        return self.call("GET", f"/vips/{name}")[1]

    def last_change(self, name: str) -> dict:
        """The VIP's last REST change: `number`, and `disagreement_ms` once every LB's
        barrier reply confirmed it (None until then)."""
        return self.call("GET", f"/vips/{name}/change")[1]

    def wait_change(self, name: str, after: int, timeout_s: float = 10) -> dict:
        """Until a change numbered above `after` is confirmed by every LB of the VIP (its
        flows are in the switches: the barrier replies came back)."""
        deadline = time.monotonic() + timeout_s
        while True:
            last = self.last_change(name)
            if last.get("number", 0) > after and last.get("disagreement_ms") is not None:
                return last
            if time.monotonic() > deadline:
                raise LblabError(f"the change of VIP {name} was not confirmed by every LB "
                                 f"within {timeout_s:g} s (controller: {last})")
            time.sleep(0.005)

    def change(self, name: str, **fields) -> dict:
        return self.call("PUT", f"/vips/{name}", fields)[1]

    def add_backend(self, name: str, ip: str, weight: float = 1.0) -> dict:
        return self.call("POST", f"/vips/{name}/backends", {"ip": ip, "weight": weight})[1]

    def remove_backend(self, name: str, backend: str) -> dict:
        return self.call("DELETE", f"/vips/{name}/backends/{backend}")[1]

    def drain(self, name: str, backend: str) -> dict:
        return self.call("POST", f"/vips/{name}/backends/{backend}/drain")[1]

    def undrain(self, name: str, backend: str) -> dict:
        return self.call("POST", f"/vips/{name}/backends/{backend}/undrain")[1]


def summary(vip: dict) -> str:
    """One line of a VIP as `GET /vips` gives it: `lblab vip list` and the live lab's `vip`."""
    up = sum(b["state"] == "up" for b in vip["backends"])
    return (f"{vip['name']:<6} {vip['address']:<15} mode={vip['mode']:<4} "
            f"algorithm={vip['algorithm']:<9} conntrack={str(vip['conntrack']).lower():<5} "
            f"backends up {up}/{len(vip['backends'])}")


def for_live(live) -> VipApi:
    return VipApi(f"http://127.0.0.1:{live.controller.rest_port}")
