"""The Mininet CLI of `lblab topo up`: Mininet's own commands plus the live lab's (vip,
dns, fail, recover, ask, load), parsed and carried out by experiments/livecli.py. Glue: the
only part of the live lab that imports Mininet."""
from __future__ import annotations

import inspect

from mininet.cli import CLI
from mininet.log import error, output

from experiments.livecli import LiveLab, Usage, parse_ask, parse_dns, parse_fault, \
    parse_load, parse_vip
from topologies.system import LblabError


def _command(name: str):
    """A CLI command from a method taking the argument words and returning lines: wrong
    arguments and errors are one line each, never a traceback; the CLI goes on."""
    def wrap(fn):
        def do(self, line: str) -> None:
            try:
                lines = fn(self, line.split())
            except Usage as exc:
                error(f"*** {name}: {exc}\n")
            except LblabError as exc:
                error(f"*** {name}: {str(exc).splitlines()[0] if str(exc) else 'failed'}\n")
            except KeyboardInterrupt:
                # as Mininet's CLI.run does after a Ctrl-C: a node shell interrupted
                # mid-command would refuse every later command
                for node in self.mn.values():
                    while node.waiting:
                        node.sendInt()
                        node.waitOutput()
                error(f"*** {name}: interrupted (what was done so far stays; `vip`, `dns` "
                      "show it)\n")
            except Exception as exc:  # noqa: BLE001 -- the CLI must survive any command
                error(f"*** {name}: internal error ({type(exc).__name__}: {exc})\n")
            else:
                output("".join(f"{text}\n" for text in lines))
        do.__doc__ = inspect.cleandoc(fn.__doc__)   # `help NAME` prints it as is
        do.__name__ = f"do_{name}"
        return do
    return wrap


class LblabCLI(CLI):
    # lblab's node names contain '-' (lbc-na1): let the CLI read them as one word
    identchars = CLI.identchars + "-"

    def __init__(self, lab: LiveLab, **kwargs) -> None:
        self.lab = lab
        super().__init__(lab.live.net, **kwargs)

    def default(self, line: str) -> None:
        """A command for a node, as in Mininet; but not one that ends the node's shell
        (the host would be gone and Mininet would wait for it forever)."""
        first, args, _ = self.parseline(line)
        if first in self.mn:
            shell = getattr(self.mn[first], "shell", None)
            if args and args.split()[0] in ("exit", "logout"):
                error(f"*** `{first} exit` would end {first}'s shell and take the host "
                      "down; type exit alone to tear the lab down\n")
                return
            if shell is not None and shell.poll() is not None:
                error(f"*** {first}'s shell has exited: the host is gone until the lab "
                      "is brought up again\n")
                return
        super().default(line)

    @_command("vip")
    def do_vip(self, words):
        """Show or change a DC's VIP (REST; a change returns once every LB confirmed it).
          vip                      every VIP: mode, algorithm, backends up
          vip DC                   its pool: admin state, health, active connections,
                                   bytes, share of the hash table
          vip mode DC nat|dsr|gre  forwarding mode (gre needs topo up --gre)
          vip drain|undrain|remove|add DC BACKEND
                                   BACKEND: a backend's name or address"""
        cmd = parse_vip(self.lab.plan, words)
        if cmd[0] == "show":
            return self.lab.vip_show(cmd[1])
        if cmd[0] == "mode":
            return self.lab.vip_mode(cmd[1], cmd[2])
        return self.lab.vip_pool(*cmd)

    @_command("dns")
    def do_dns(self, words):
        """The GSLB authority: its state and what it answers a user of each region.
          dns                          policy, TTL, each DC's health and load against
                                       capacity, the answer per region (ECS)
          dns policy all|geo|capacity  switch the answering policy
          dns ttl SECONDS              the TTL of new answers (cached ones keep theirs)"""
        cmd = parse_dns(words)
        if cmd[0] == "show":
            return self.lab.dns_show()
        return self.lab.dns_set(*cmd)

    @_command("fail")
    def do_fail(self, words):
        """Fail part of the lab on purpose (recover undoes it).
          fail dc DC            stop every backend server of the DC (connections
                                refused); waits until the authority's probes mark it
                                down, then shows what each region gets
          fail backend BACKEND  stop one backend's server; waits until health checks
                                take it out of the VIP's table
          fail link SITE-SITE   cut a WAN link (e.g. ap-ap1): both routers drop what
                                arrives on it; static routes do not reroute"""
        return self.lab.fail(*parse_fault("fail", self.lab.plan, words))

    @_command("recover")
    def do_recover(self, words):
        """Undo a fail.
          recover dc DC            restart every backend of the DC (also those failed
                                   one by one); waits until the authority sees it
          recover backend BACKEND  restart one; waits for the health checks
          recover link SITE-SITE   stop dropping on the link"""
        return self.lab.recover(*parse_fault("recover", self.lab.plan, words))

    @_command("ask")
    def do_ask(self, words):
        """Resolve a name as a client host does.
          ask HOST [NAME]  through HOST's resolver (NAME: the service by default): the
                           answer, the DC it points to, the TTL left; then what the
                           authority answers that resolver for this user now, with
                           the ECS scope (or that it sees only the resolver)"""
        cmd = parse_ask(self.lab.plan, words, self.lab.config.service_fqdn)
        return self.lab.ask(*cmd)

    @_command("load")
    def do_load(self, words):
        """Search traffic from a client host, in the background.
          load HOST RATE SECONDS  open loop, RATE requests/s (at most 500), each
                                  resolving through HOST's resolver, then GET /search
                                  on the answer; prints each DC's share of the
                                  answered requests, and where failures went, when
                                  it ends"""
        return self.lab.load(*parse_load(self.lab.plan, words))
