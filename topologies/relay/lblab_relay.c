/*
 * lblab-relay: userspace link emulation between two interfaces, for kernels without sch_netem.
 *
 * Why this exists: where the kernel has no netem, Mininet's TCLink(delay=...) silently applies
 * no delay. This program joins two interfaces of the current network namespace with AF_PACKET
 * raw sockets and applies, per direction and independently, a constant one-way delay, optional
 * jitter, random loss and a rate cap (frames serialised at the cap rate behind a packet-limited
 * tail-drop queue, then delayed), i.e. what netem + htb would do.
 *
 * Why C: a Python prototype spends 7-10 us per frame; this loop needs far less, so one process
 * per link carries more and keeps timing under load.
 *
 * Compensation (--comp): a frame whose IPv4 source (or destination) lies in a given subnet gets
 * a shorter delay. lblab uses it to take the measured latency of the LAN at each end of a WAN
 * path (OVS userspace switch traversals) out of the WAN delay, only for frames that did (or
 * will) cross that LAN: host-to-host RTTs then match the scenario on every path, transit
 * paths included, while router-to-router traffic keeps the full delay.
 *
 * Timing: CLOCK_MONOTONIC; block in ppoll until shortly before the next due frame (timer slack
 * set to 1 ns), then busy-wait the last --spin-us while still ingesting new frames; nothing is
 * queued -> block indefinitely, so an idle link costs ~0 CPU.
 *
 * Build: gcc -O2 -Wall -o build/lblab-relay topologies/relay/lblab_relay.c
 * Usage: lblab-relay [options] IF_A IF_B      (see --help)
 * Exit:  0 on SIGTERM/SIGINT after printing one JSON line of counters (stdout or --stats-file);
 *        2 on bad usage, 1 on setup errors (bad interface name, socket permissions, ...).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <math.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

#define RXBUF 65536
#define RX_BUDGET 64 /* frames read per socket per loop: bounds how long sends can be held up */

#define MAX_COMP 4
typedef struct {
    int on_dst;             /* 0: match the IPv4 source, 1: the destination */
    uint32_t net, mask;     /* host byte order */
    double ms;              /* delay taken off a matching frame */
} comp_rule;

typedef struct {
    double delay_ms, jitter_ms, loss_pct, rate_mbps; /* rate_mbps <= 0: no cap */
    long queue_pkts;
    int reorder;
    int ncomp;
    comp_rule comp[MAX_COMP];
} dir_params;

typedef struct {
    uint64_t due;   /* CLOCK_MONOTONIC ns when the frame leaves */
    uint32_t len;
    uint8_t *data;
} frame;

typedef struct {
    const char *name;       /* "ab" or "ba" */
    dir_params p;
    int in_fd, out_fd;
    uint64_t rng[4];
    /* delay line: FIFO ring (no reorder) or min-heap on due (reorder) */
    frame *q;
    size_t cap, head, count;
    /* rate queue: tx-done times of frames still being serialised (for the packet limit) */
    uint64_t *txq;
    size_t txcap, txhead, txcount;
    uint64_t last_txdone, last_due;
    /* counters */
    uint64_t rx, tx, drop_loss, drop_queue, drop_overflow, tx_errors, bytes_rx, bytes_tx;
    uint64_t late_n, late_sum_ns, late_max_ns, late_over_1ms, max_queue, compensated;
} direction;

static volatile sig_atomic_t stop_flag = 0, dump_flag = 0;
static long max_inflight = 50000;
static long spin_ns = 200000;
static const char *stats_file = NULL;
static const char *if_names[2];
static int rt_requested = 0, rt_applied = 0;
static unsigned long long seed_used = 0;
static int seeded = 0;

static void on_signal(int sig) {
    if (sig == SIGUSR1) dump_flag = 1;
    else stop_flag = 1;
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xoshiro256** seeded by splitmix64: fast, seedable, per-direction streams */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static uint64_t rng_next(uint64_t *s) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
    return r;
}
static inline double rng_unit(uint64_t *s) { return (rng_next(s) >> 11) * 0x1.0p-53; } /* [0,1) */

static void die(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "lblab-relay: error: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    exit(1);
}

static void usage(FILE *f) {
    fprintf(f,
"usage: lblab-relay [options] IF_A IF_B\n"
"Joins IF_A and IF_B (current netns) and emulates a link; A->B and B->A are independent.\n"
"Per-direction options: --ab-X applies to A->B, --ba-X to B->A, --X to both:\n"
"  --delay MS       constant one-way delay (float, default 0)\n"
"  --jitter MS      uniform jitter +-MS; frames keep their order unless --reorder\n"
"  --loss PCT       random loss, percent (0-100)\n"
"  --rate MBPS      rate cap in Mbit/s (frames serialised at this rate, then delayed)\n"
"  --queue PKTS     rate queue limit in frames, tail drop (default 1000)\n"
"  --reorder        let jitter reorder frames (independent delay per frame, like netem)\n"
"  --comp src|dst:NET/LEN:MS  take MS off the delay of IPv4 frames whose source|destination\n"
"                   is in NET/LEN (repeatable, up to 4 per direction; delay stays >= 0)\n"
"Global options:\n"
"  --seed N         RNG seed (default: random)\n"
"  --rt-priority N  run SCHED_FIFO at priority N (1-99)\n"
"  --stats-file P   write the JSON counters here instead of stdout (also on SIGUSR1)\n"
"  --ready-file P   create P once both sockets are open (readiness signal)\n"
"  --rcvbuf BYTES   socket receive buffer (default 1048576)\n"
"  --spin-us N      busy-wait this long before each due frame (default 200)\n"
"  --max-inflight N frames held per direction before dropping (default 50000)\n"
"  --die-with-parent  exit (as on SIGTERM) when the parent process exits\n");
}

static double parse_num(const char *opt, const char *val, double lo, double hi) {
    char *end;
    if (!val) { fprintf(stderr, "lblab-relay: %s needs a value\n", opt); exit(2); }
    errno = 0;
    double v = strtod(val, &end);
    if (errno || end == val || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "lblab-relay: bad value for %s: '%s' (expected %g..%g)\n", opt, val, lo, hi);
        exit(2);
    }
    return v;
}

/* "src|dst:A.B.C.D/LEN:MS" -> rule; exits 2 on a malformed value. */
static comp_rule parse_comp(const char *opt, const char *val) {
    comp_rule r = {0};
    char field[4], addr[16], ms[32];
    unsigned len;
    struct in_addr in;
    if (!val || sscanf(val, "%3[a-z]:%15[0-9.]/%u:%31s", field, addr, &len, ms) != 4 ||
        (strcmp(field, "src") && strcmp(field, "dst")) || len > 32 ||
        inet_pton(AF_INET, addr, &in) != 1) {
        fprintf(stderr, "lblab-relay: bad value for %s: '%s' (expected src|dst:A.B.C.D/LEN:MS)\n",
                opt, val ? val : "");
        exit(2);
    }
    r.on_dst = !strcmp(field, "dst");
    r.mask = len ? 0xffffffffu << (32 - len) : 0;
    r.net = ntohl(in.s_addr) & r.mask;
    r.ms = parse_num(opt, ms, 0, 3600e3);
    return r;
}

/* Delay (ms) to take off this frame: the sum of the matching rules. */
static double frame_comp(const dir_params *p, const uint8_t *buf, uint32_t len) {
    if (!p->ncomp || len < 34 || buf[12] != 0x08 || buf[13] != 0x00 || (buf[14] >> 4) != 4)
        return 0;
    uint32_t src = (uint32_t)buf[26] << 24 | buf[27] << 16 | buf[28] << 8 | buf[29];
    uint32_t dst = (uint32_t)buf[30] << 24 | buf[31] << 16 | buf[32] << 8 | buf[33];
    double off = 0;
    for (int i = 0; i < p->ncomp; i++) {
        const comp_rule *r = &p->comp[i];
        if (((r->on_dst ? dst : src) & r->mask) == r->net) off += r->ms;
    }
    return off;
}

/* Apply one per-direction option to mask (1=ab, 2=ba). Returns 1 if it consumed a value. */
static int set_dir_opt(dir_params *d, int mask, const char *opt, const char *key, const char *val) {
    for (int i = 0; i < 2; i++) {
        if (!(mask & (1 << i))) continue;
        dir_params *p = &d[i];
        if (!strcmp(key, "delay")) p->delay_ms = parse_num(opt, val, 0, 3600e3);
        else if (!strcmp(key, "jitter")) p->jitter_ms = parse_num(opt, val, 0, 3600e3);
        else if (!strcmp(key, "loss")) p->loss_pct = parse_num(opt, val, 0, 100);
        else if (!strcmp(key, "rate")) p->rate_mbps = parse_num(opt, val, 1e-6, 1e6);
        else if (!strcmp(key, "queue")) p->queue_pkts = (long)parse_num(opt, val, 1, 1e7);
        else if (!strcmp(key, "reorder")) { p->reorder = 1; continue; }
        else if (!strcmp(key, "comp")) {
            if (p->ncomp == MAX_COMP) {
                fprintf(stderr, "lblab-relay: at most %d %s per direction\n", MAX_COMP, opt);
                exit(2);
            }
            p->comp[p->ncomp++] = parse_comp(opt, val);
        }
        else { fprintf(stderr, "lblab-relay: unknown option %s (see --help)\n", opt); exit(2); }
    }
    return strcmp(key, "reorder") != 0;
}

static int open_iface(const char *ifname, long rcvbuf) {
    if (strlen(ifname) >= IF_NAMESIZE) die("interface name too long: '%s'%s", ifname, "");
    unsigned idx = if_nametoindex(ifname);
    if (!idx) die("no such interface '%s' in this network namespace%s", ifname, "");
    /* protocol 0: receive nothing until bound to this interface */
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) die("cannot open AF_PACKET socket for '%s': %s (needs root/CAP_NET_RAW)", ifname, strerror(errno));
    int one = 1, sz = (int)rcvbuf;
    if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0)
        die("PACKET_IGNORE_OUTGOING unsupported on '%s': %s (kernel >= 4.20 needed)", ifname, strerror(errno));
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    struct sockaddr_ll sll = {0};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = (int)idx;
    if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0)
        die("cannot bind to '%s': %s", ifname, strerror(errno));
    /* promiscuous for the socket's lifetime; the kernel undoes it when we exit */
    struct packet_mreq mr = {0};
    mr.mr_ifindex = (int)idx;
    mr.mr_type = PACKET_MR_PROMISC;
    if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0)
        die("cannot set '%s' promiscuous: %s", ifname, strerror(errno));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* ---- delay line ---- */
static inline int due_before(const frame *a, const frame *b) { return a->due < b->due; }

static int dl_push(direction *d, frame f) {
    if ((long)d->count >= max_inflight) return -1;
    if (d->count == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 1024;
        frame *nq = malloc(ncap * sizeof *nq);
        if (!nq) return -1;
        for (size_t i = 0; i < d->count; i++) nq[i] = d->q[(d->head + i) % d->cap];
        free(d->q);
        d->q = nq; d->cap = ncap; d->head = 0;
    }
    if (!d->p.reorder) {
        d->q[(d->head + d->count) % d->cap] = f;
        d->count++;
    } else { /* binary min-heap on due, head stays 0 */
        size_t i = d->count++;
        d->q[i] = f;
        while (i > 0) {
            size_t up = (i - 1) / 2;
            if (!due_before(&d->q[i], &d->q[up])) break;
            frame t = d->q[i]; d->q[i] = d->q[up]; d->q[up] = t; i = up;
        }
    }
    if (d->count > d->max_queue) d->max_queue = d->count;
    return 0;
}

static inline frame *dl_peek(direction *d) { return d->count ? &d->q[d->head] : NULL; }

static void dl_pop(direction *d) {
    if (!d->p.reorder) { d->head = (d->head + 1) % d->cap; d->count--; return; }
    d->q[0] = d->q[--d->count];
    size_t i = 0, n = d->count;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && due_before(&d->q[l], &d->q[m])) m = l;
        if (r < n && due_before(&d->q[r], &d->q[m])) m = r;
        if (m == i) break;
        frame t = d->q[i]; d->q[i] = d->q[m]; d->q[m] = t; i = m;
    }
}

/* ---- per-frame arrival: loss, rate queue, delay ---- */
static void on_frame(direction *d, const uint8_t *buf, uint32_t len, uint64_t now) {
    d->rx++; d->bytes_rx += len;
    if (d->p.loss_pct > 0 && rng_unit(d->rng) * 100.0 < d->p.loss_pct) { d->drop_loss++; return; }
    uint64_t txdone = now;
    if (d->p.rate_mbps > 0) {
        while (d->txcount && d->txq[d->txhead] <= now) { d->txhead = (d->txhead + 1) % d->txcap; d->txcount--; }
        if ((long)d->txcount >= d->p.queue_pkts) { d->drop_queue++; return; }
        uint64_t start = d->last_txdone > now ? d->last_txdone : now;
        txdone = start + (uint64_t)((double)len * 8.0 * 1000.0 / d->p.rate_mbps); /* ns */
        d->last_txdone = txdone;
        d->txq[(d->txhead + d->txcount) % d->txcap] = txdone;
        d->txcount++;
    }
    double delay = d->p.delay_ms;
    if (d->p.ncomp) {
        double off = frame_comp(&d->p, buf, len);
        if (off > 0) { delay = delay > off ? delay - off : 0; d->compensated++; }
    }
    if (d->p.jitter_ms > 0) {
        delay += (rng_unit(d->rng) * 2.0 - 1.0) * d->p.jitter_ms;
        if (delay < 0) delay = 0;
    }
    uint64_t due = txdone + (uint64_t)(delay * 1e6);
    if (!d->p.reorder) { if (due < d->last_due) due = d->last_due; d->last_due = due; }
    frame f = { due, len, malloc(len) };
    if (!f.data) { d->drop_overflow++; return; }
    memcpy(f.data, buf, len);
    if (dl_push(d, f) < 0) { free(f.data); d->drop_overflow++; }
}

static void send_due(direction *d, uint64_t now) {
    frame *f;
    while ((f = dl_peek(d)) && f->due <= now) {
        ssize_t n = send(d->out_fd, f->data, f->len, MSG_DONTWAIT);
        if (n == (ssize_t)f->len) { d->tx++; d->bytes_tx += f->len; }
        else d->tx_errors++;
        uint64_t late = now - f->due;
        d->late_n++; d->late_sum_ns += late;
        if (late > d->late_max_ns) d->late_max_ns = late;
        if (late > 1000000) d->late_over_1ms++;
        free(f->data);
        dl_pop(d);
    }
}

static int drain(direction *d, uint8_t *buf, int budget) {
    int got = 0;
    while (got < budget) {
        ssize_t n = recv(d->in_fd, buf, RXBUF, MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0) break; /* EAGAIN or transient error */
        if (n > RXBUF) { d->rx++; d->tx_errors++; got++; continue; } /* truncated: offloads on? */
        on_frame(d, buf, (uint32_t)n, now_ns());
        got++;
    }
    return got;
}

static void write_dir(FILE *f, direction *d) {
    double late_mean = d->late_n ? (double)d->late_sum_ns / d->late_n / 1000.0 : 0;
    fprintf(f, "\"%s\":{\"rx\":%llu,\"tx\":%llu,\"drop_loss\":%llu,\"drop_queue\":%llu,"
            "\"drop_overflow\":%llu,\"tx_errors\":%llu,\"bytes_rx\":%llu,\"bytes_tx\":%llu,"
            "\"queued\":%zu,\"max_queue\":%llu,\"late_us_mean\":%.2f,\"late_us_max\":%.2f,"
            "\"late_over_1ms\":%llu,\"delay_ms\":%g,\"jitter_ms\":%g,\"loss_pct\":%g,"
            "\"rate_mbps\":%g,\"queue_pkts\":%ld,\"reorder\":%s,\"comp_rules\":%d,"
            "\"compensated\":%llu}",
            d->name, (unsigned long long)d->rx, (unsigned long long)d->tx,
            (unsigned long long)d->drop_loss, (unsigned long long)d->drop_queue,
            (unsigned long long)d->drop_overflow, (unsigned long long)d->tx_errors,
            (unsigned long long)d->bytes_rx, (unsigned long long)d->bytes_tx, d->count,
            (unsigned long long)d->max_queue, late_mean, d->late_max_ns / 1000.0,
            (unsigned long long)d->late_over_1ms, d->p.delay_ms, d->p.jitter_ms, d->p.loss_pct,
            d->p.rate_mbps > 0 ? d->p.rate_mbps : 0, d->p.queue_pkts, d->p.reorder ? "true" : "false",
            d->p.ncomp, (unsigned long long)d->compensated);
}

static void write_stats(direction *dirs, int final) {
    FILE *f = stdout;
    char tmp[4096];
    if (stats_file) {
        snprintf(tmp, sizeof tmp, "%s.tmp", stats_file);
        f = fopen(tmp, "w");
        if (!f) { fprintf(stderr, "lblab-relay: cannot write %s: %s\n", tmp, strerror(errno)); return; }
    }
    fprintf(f, "{\"pid\":%d,\"a\":\"%s\",\"b\":\"%s\",\"final\":%s,\"seed\":%llu,\"rt_priority\":%d,"
            "\"rt_applied\":%s,", (int)getpid(), if_names[0], if_names[1], final ? "true" : "false",
            seed_used, rt_requested, rt_applied ? "true" : "false");
    write_dir(f, &dirs[0]);
    fputc(',', f);
    write_dir(f, &dirs[1]);
    fputs("}\n", f);
    if (stats_file) {
        fclose(f);
        if (rename(tmp, stats_file) < 0) fprintf(stderr, "lblab-relay: cannot rename %s: %s\n", tmp, strerror(errno));
    } else fflush(f);
}

int main(int argc, char **argv) {
    dir_params dp[2];
    memset(dp, 0, sizeof dp);
    for (int i = 0; i < 2; i++) dp[i].queue_pkts = 1000;
    const char *ready_file = NULL;
    long rcvbuf = 1 << 20;
    int die_with_parent = 0;
    const char *pos[2];
    int npos = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (strncmp(a, "--", 2) != 0) {
            if (npos == 2) { fprintf(stderr, "lblab-relay: too many arguments: '%s'\n", a); return 2; }
            pos[npos++] = a; continue;
        }
        const char *k = a + 2;
        if (!strcmp(k, "seed")) { seed_used = (unsigned long long)parse_num(a, v, 0, 9007199254740992.0); seeded = 1; i++; }
        else if (!strcmp(k, "rt-priority")) { rt_requested = (int)parse_num(a, v, 1, 99); i++; }
        else if (!strcmp(k, "stats-file")) { if (!v) { fprintf(stderr, "lblab-relay: %s needs a value\n", a); return 2; } stats_file = v; i++; }
        else if (!strcmp(k, "ready-file")) { if (!v) { fprintf(stderr, "lblab-relay: %s needs a value\n", a); return 2; } ready_file = v; i++; }
        else if (!strcmp(k, "rcvbuf")) { rcvbuf = (long)parse_num(a, v, 4096, 1 << 30); i++; }
        else if (!strcmp(k, "spin-us")) { spin_ns = (long)(parse_num(a, v, 0, 100000) * 1000); i++; }
        else if (!strcmp(k, "die-with-parent")) die_with_parent = 1;
        else if (!strcmp(k, "max-inflight")) { max_inflight = (long)parse_num(a, v, 1, 1e8); i++; }
        else if (!strncmp(k, "ab-", 3)) i += set_dir_opt(dp, 1, a, k + 3, v);
        else if (!strncmp(k, "ba-", 3)) i += set_dir_opt(dp, 2, a, k + 3, v);
        else i += set_dir_opt(dp, 3, a, k, v);
    }
    if (npos != 2) { usage(stderr); fprintf(stderr, "lblab-relay: need exactly two interfaces IF_A IF_B\n"); return 2; }
    if (!strcmp(pos[0], pos[1])) { fprintf(stderr, "lblab-relay: IF_A and IF_B must differ\n"); return 2; }
    if_names[0] = pos[0]; if_names[1] = pos[1];

    if (!seeded && getrandom(&seed_used, sizeof seed_used, 0) != sizeof seed_used)
        seed_used = now_ns() ^ ((uint64_t)getpid() << 32);

    /* signals: blocked except inside ppoll, so none is lost between checking and sleeping */
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM); sigaddset(&block, SIGINT); sigaddset(&block, SIGUSR1); sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &waitmask);
    sigdelset(&waitmask, SIGTERM); sigdelset(&waitmask, SIGINT); sigdelset(&waitmask, SIGUSR1); sigdelset(&waitmask, SIGHUP);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL); sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL); sigaction(SIGHUP, &sa, NULL);
    /* optionally die with the parent (Mininet/test harness) so no relay outlives its run */
    if (die_with_parent) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() == 1) { fprintf(stderr, "lblab-relay: parent already gone\n"); return 1; }
    }
    prctl(PR_SET_TIMERSLACK, 1UL);

    int fd_a = open_iface(pos[0], rcvbuf), fd_b = open_iface(pos[1], rcvbuf);

    if (rt_requested) {
        struct sched_param sp = { .sched_priority = rt_requested };
        if (sched_setscheduler(0, SCHED_FIFO, &sp) == 0) rt_applied = 1;
        else fprintf(stderr, "lblab-relay: warning: SCHED_FIFO priority %d not applied: %s\n", rt_requested, strerror(errno));
    }

    direction dirs[2];
    memset(dirs, 0, sizeof dirs);
    const char *names[2] = {"ab", "ba"};
    uint64_t sm = seed_used;
    for (int i = 0; i < 2; i++) {
        direction *d = &dirs[i];
        d->name = names[i];
        d->p = dp[i];
        d->in_fd = i == 0 ? fd_a : fd_b;
        d->out_fd = i == 0 ? fd_b : fd_a;
        for (int k = 0; k < 4; k++) d->rng[k] = splitmix64(&sm);
        if (d->p.rate_mbps > 0) {
            d->txcap = (size_t)d->p.queue_pkts + 1;
            d->txq = calloc(d->txcap, sizeof *d->txq);
            if (!d->txq) die("out of memory for queue of %s%s", d->name, "");
        }
    }
    /* discard anything that raced in before bind completed */
    static uint8_t buf[RXBUF];
    while (recv(fd_a, buf, RXBUF, MSG_DONTWAIT) >= 0) {}
    while (recv(fd_b, buf, RXBUF, MSG_DONTWAIT) >= 0) {}

    if (ready_file) {
        int rf = open(ready_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (rf < 0) die("cannot create ready file %s: %s", ready_file, strerror(errno));
        dprintf(rf, "%d\n", (int)getpid());
        close(rf);
    }

    struct pollfd pfd[2] = { { fd_a, POLLIN, 0 }, { fd_b, POLLIN, 0 } };
    while (!stop_flag) {
        uint64_t now = now_ns();
        send_due(&dirs[0], now);
        send_due(&dirs[1], now);
        uint64_t next = UINT64_MAX;
        for (int i = 0; i < 2; i++) { frame *f = dl_peek(&dirs[i]); if (f && f->due < next) next = f->due; }

        if (next != UINT64_MAX && next <= now + (uint64_t)spin_ns) {
            /* busy phase: keep ingesting (arrival timestamps stay exact) until the head is due */
            int got = drain(&dirs[0], buf, RX_BUDGET) + drain(&dirs[1], buf, RX_BUDGET);
            if (!got) {
                /* nothing arriving: spin on the clock, peeking at the sockets now and then */
                int n = 0;
                while ((now = now_ns()) < next && !stop_flag) {
                    if (++n % 64 == 0) {
                        struct pollfd p2[2] = { { fd_a, POLLIN, 0 }, { fd_b, POLLIN, 0 } };
                        if (poll(p2, 2, 0) > 0) break;
                    }
                }
            }
            /* let pending signals in without sleeping */
            struct timespec zero = {0, 0};
            ppoll(NULL, 0, &zero, &waitmask);
            goto stats;
        }
        struct timespec ts, *tsp = NULL;
        if (next != UINT64_MAX) {
            uint64_t wait = next - now - (uint64_t)spin_ns;
            ts.tv_sec = (time_t)(wait / 1000000000ull);
            ts.tv_nsec = (long)(wait % 1000000000ull);
            tsp = &ts;
        }
        int r = ppoll(pfd, 2, tsp, &waitmask);
        if (r > 0) {
            if (pfd[0].revents & (POLLERR | POLLNVAL)) die("socket error on '%s'%s", pos[0], "");
            if (pfd[1].revents & (POLLERR | POLLNVAL)) die("socket error on '%s'%s", pos[1], "");
            drain(&dirs[0], buf, RX_BUDGET);
            drain(&dirs[1], buf, RX_BUDGET);
        }
    stats:
        if (dump_flag) { dump_flag = 0; write_stats(dirs, 0); }
    }
    write_stats(dirs, 1);
    return 0;
}
