"""nginx as a backend server (the default): one nginx per backend host, with the same
endpoints and replies as the Python server (experiments/workloads/httpserver.py).

Every reply names its backend and DC (headers X-Backend and X-DC, and the first body line of
/search, /stream and /upload), and the client address it saw (X-Client: a NAT or DSR VIP
keeps the user's). Handlers are Lua (Debian's libnginx-mod-http-lua):
- GET /search?size=N: N bytes (at least the identity line), with a Content-Length.
- POST /upload: reads the body from the socket in chunks and counts what arrived; only a body
  received in full is acknowledged ("received=N"); nginx alone would answer `return 200`
  before the body arrives and discard it.
- GET /stream?seconds=S&interval=I: a line every I seconds, flushed, then close (no chunked
  framing, so a client reads lines as from the Python server).
- GET /health, GET /stats: JSON counters kept by the server itself in a shared dict:
  connections (with at least one request), active (nginx's own count), requests, bytes_in,
  served (/search and /upload answered 200), shed (refused with 503 by the capacity limit),
  by_path (requests to /search and to /upload, whatever their answer: each class's demand).
- With a capacity limit (topologies/capacity.py): /search and /upload go through nginx's
  limit_req (burst admitted at once, then delayed up to the queue, `delay=`/`nodelay`) and,
  with max_concurrent, limit_conn; a refused request gets 503 with Retry-After from a named
  location that counts it. /health and /stats are never limited.

One process per backend (`master_process off`): its PID is the one lblab records and stops,
and nothing is left behind it. Pure: renders text; experiments/workloads/control.py starts it.
"""
from __future__ import annotations

from pathlib import Path

from topologies.capacity import BackendLimit

NGINX = "/usr/sbin/nginx"
MODULES = ("/usr/lib/nginx/modules/ndk_http_module.so",
           "/usr/lib/nginx/modules/ngx_http_lua_module.so")
MAX_SEARCH_BYTES = 10_000_000   # as the Python server
UPLOAD_CHUNK = 65536

_LUA_INIT = r"""
    lblab = { ident = "backend=%(backend)s dc=%(dc)s\n", search = {} }
    function lblab.headers()
        ngx.header["X-Backend"] = "%(backend)s"
        ngx.header["X-DC"] = "%(dc)s"
        ngx.header["X-Client"] = ngx.var.remote_addr
    end
    function lblab.reply(status, body, ctype)
        ngx.status = status
        lblab.headers()
        ngx.header["Content-Type"] = ctype or "text/plain"
        ngx.header["Content-Length"] = #body
        ngx.print(body)
        return ngx.exit(status)
    end
"""

_SEARCH = r"""
        local size = tonumber(ngx.var.arg_size or "1024")
        if not size or size ~= math.floor(size) then
            return lblab.reply(400, "bad size\n")
        end
        size = math.min(size, %(max)d)
        local body = lblab.search[size]
        if not body then
            body = lblab.ident .. string.rep("x", math.max(0, size - #lblab.ident))
            if size <= 1048576 then lblab.search[size] = body end
        end
        return lblab.reply(200, body)
"""

_UPLOAD = r"""
        if ngx.req.get_method() ~= "POST" then return lblab.reply(404, "not found\n") end
        local length = tonumber(ngx.var.http_content_length or "")
        if not length then return lblab.reply(411, "Content-Length required\n") end
        local sock, err = ngx.req.socket()
        if not sock then return ngx.exit(400) end
        sock:settimeout(60000)
        local received = 0
        while received < length do
            local chunk, err, partial = sock:receive(math.min(%(chunk)d, length - received))
            if not chunk then
                received = received + #(partial or "")
                break
            end
            received = received + #chunk
        end
        ngx.shared.lblab:incr("bytes_in", received, 0)
        if received ~= length then return ngx.exit(444) end  -- close, no acknowledgement
        return lblab.reply(200, lblab.ident .. "received=" .. received .. "\n")
"""

_STREAM = r"""
        local seconds = tonumber(ngx.var.arg_seconds or "10")
        local interval = tonumber(ngx.var.arg_interval or "0.1")
        if not seconds or not interval or interval <= 0 then
            return lblab.reply(400, "bad parameters\n")
        end
        lblab.headers()
        ngx.print(lblab.ident)
        ngx.flush(true)
        local n, stop = 0, ngx.now() + seconds
        while ngx.now() < stop do
            ngx.sleep(interval)
            ngx.update_time()
            n = n + 1
            local ok = ngx.print("tick " .. n .. "\n")
            if not ok then return end
            ngx.flush(true)
        end
"""

_STATS = r"""
        local d = ngx.shared.lblab
        return lblab.reply(200, string.format(
            '{"connections": %d, "active": %d, "requests": %d, "bytes_in": %d, '
            .. '"served": %d, "shed": %d, "by_path": {"search": %d, "upload": %d}}',
            d:get("connections") or 0, tonumber(ngx.var.connections_active) or 0,
            (d:get("requests") or 0) + 1, d:get("bytes_in") or 0, d:get("served") or 0,
            d:get("shed") or 0, d:get("req_search") or 0, d:get("req_upload") or 0),
            "application/json")
"""

_SHED = r"""
        ngx.shared.lblab:incr("shed", 1, 0)
        ngx.header["Retry-After"] = "%(retry)d"
        return lblab.reply(503, "overloaded\n")
"""

_LOG = r"""
        local d = ngx.shared.lblab
        d:incr("requests", 1, 0)
        if ngx.var.connection_requests == "1" then d:incr("connections", 1, 0) end
        local uri = ngx.var.uri
        if uri == "/search" or uri == "/upload" then
            d:incr("req_" .. string.sub(uri, 2), 1, 0)
            if ngx.status == 200 then d:incr("served", 1, 0) end
        end
"""


def _limit_conf(limit: BackendLimit | None) -> tuple[str, str, str]:
    """(http-level zones, per-location directives, the named location for refusals)."""
    if limit is None:
        return "", "", ""
    per_minute = max(1, round(limit.rate_rps * 60))   # nginx: whole requests per minute
    zones = f"    limit_req_zone $server_port zone=lblab_rate:64k rate={per_minute}r/m;\n"
    if limit.queue:
        rule = f"limit_req zone=lblab_rate burst={limit.burst + limit.queue} " \
               f"delay={limit.burst};"
    else:
        rule = f"limit_req zone=lblab_rate burst={limit.burst} nodelay;"
    if limit.max_concurrent:
        zones += "    limit_conn_zone $server_port zone=lblab_conc:64k;\n"
        rule += f" limit_conn lblab_conc {limit.max_concurrent};"
    rule += " limit_req_status 503; limit_conn_status 503; error_page 503 = @lblab_shed;"
    handler = _SHED % {"retry": limit.retry_after_s}
    shed = "        location @lblab_shed { content_by_lua_block {" + handler + "        } }\n"
    return zones, rule, shed


def render_conf(backend: str, dc: str, port: int, run_dir: Path, bind: str = "0.0.0.0",
                worker_connections: int = 65536, limit: BackendLimit | None = None) -> str:
    """The nginx.conf of one backend. `run_dir` holds its pid, logs and temp paths (an
    lblab run directory, so `lblab clean` finds what a crashed run left); `limit`: its
    capacity limit, if any."""
    for name, value in (("backend", backend), ("dc", dc)):
        if not value or any(c in value for c in '"\\\n;{}$ '):
            raise ValueError(f"nginx backend: unusable {name} {value!r}")
    subst = {"backend": backend, "dc": dc, "max": MAX_SEARCH_BYTES, "chunk": UPLOAD_CHUNK}
    temp = "\n".join(f"    {kind}_temp_path {run_dir}/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    modules = "\n".join(f"load_module {m};" for m in MODULES)
    zones, rule, shed = _limit_conf(limit)
    return f"""# lblab backend {backend} ({dc}); rendered by lab/nginx.py
{modules}
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {2 * worker_connections};
pid {run_dir}/nginx.pid;
error_log {run_dir}/error.log warn;
events {{
    worker_connections {worker_connections};
    multi_accept on;
}}
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;   # idle keep-alive connections held (bench: 50,000 of them)
    client_max_body_size 0;
    lua_shared_dict lblab 1m;
    lua_socket_log_errors off;
{zones}{temp}
    init_by_lua_block {{{_LUA_INIT % subst}    }}
    server {{
        listen {bind}:{port} backlog=4096;
        log_by_lua_block {{{_LOG}        }}
        location = /search {{ {rule}
            content_by_lua_block {{{_SEARCH % subst}        }} }}
        location = /upload {{ {rule}
            content_by_lua_block {{{_UPLOAD % subst}        }} }}
{shed}
        location = /stream {{
            keepalive_timeout 0;
            chunked_transfer_encoding off;
            content_by_lua_block {{{_STREAM}        }}
        }}
        location = /health {{ content_by_lua_block {{ return lblab.reply(200, "ok\\n") }} }}
        location = /stats {{ content_by_lua_block {{{_STATS}        }} }}
        location / {{ content_by_lua_block {{ return lblab.reply(404, "not found\\n") }} }}
    }}
}}
"""


def command(conf_path: Path, max_files: int = 131072) -> list[str]:
    """The backend's nginx, its file limit raised first as far as this machine allows
    (the hard limit, unless root may raise it): with `master_process off` nginx never
    applies worker_rlimit_nofile itself. prlimit execs nginx: the PID stays nginx's."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = max_files if _may_raise_hard_limit() else min(max_files, hard)
    limit = max(limit, soft)
    return ["prlimit", f"--nofile={limit}:{max(limit, hard)}", "--",
            NGINX, "-c", str(conf_path), "-p", str(conf_path.parent)]


def _may_raise_hard_limit() -> bool:
    """CAP_SYS_RESOURCE in the effective set (containers often drop it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 24))
    except OSError:
        pass
    return False
