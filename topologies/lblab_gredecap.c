/* lblab-gredecap: the userspace GRE decapsulator in C (gre_decap: userspace), the compiled
 * twin of topologies/gredecap.py, whose parse() is the specification: same command line,
 * same drop reasons, same JSON counters file.
 *
 * Inside one backend's network namespace: a raw IPv4 socket for IP protocol 47 receives
 * every GRE packet addressed to the host; up to BATCH packets per system call (recvmmsg);
 * each well-formed GRE-in-IPv4 packet carrying IPv4 loses its outer IPv4 and GRE headers
 * (RFC 2784/2890: optional checksum, key, sequence number) and the inner packet is written to
 * a TUN device (IFF_TUN | IFF_NO_PI), where the kernel receives it as if it had arrived
 * there. Anything else is dropped and counted by reason, never a crash.
 *
 * Counters (and the process's own CPU time) are written to --stats as one JSON object
 * (atomically: tmp + rename) at start, on SIGUSR1 and on exit (SIGTERM, SIGINT).
 *
 *   lblab-gredecap --tun lbg-tun --stats FILE [--mtu 1500] [--no-verify-checksum]
 *   lblab-gredecap --selftest     (stdin: 4-byte big-endian length + packet, repeated;
 *                                  stdout: "offset length reason" per packet; for tests)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define IPPROTO_GRE_ 47
#define ETH_P_IP_ 0x0800
#define BATCH 64
#define BUF 65536

#define GRE_C 0x8000
#define GRE_R 0x4000
#define GRE_K 0x2000
#define GRE_S 0x1000
#define GRE_SSR 0x0800
#define GRE_RECUR 0x0700
#define GRE_VERSION 0x0007

enum reason { OK = 0, SHORT_OUTER, NOT_IPV4_OUTER, BAD_OUTER_IHL, OUTER_FRAGMENT, NOT_GRE,
              SHORT_GRE, GRE_VERSION_R, GRE_ROUTING, GRE_RESERVED, GRE_CHECKSUM,
              NOT_IPV4_INNER, SHORT_INNER, BAD_INNER, N_REASONS };
static const char *REASONS[N_REASONS] = {
    "", "short_outer", "not_ipv4_outer", "bad_outer_ihl", "outer_fragment", "not_gre",
    "short_gre", "gre_version", "gre_routing", "gre_reserved", "gre_checksum",
    "not_ipv4_inner", "short_inner", "bad_inner"};

static uint16_t checksum(const uint8_t *p, size_t n) {
    uint32_t sum = 0;
    for (size_t i = 0; i + 1 < n; i += 2) sum += (uint32_t)p[i] << 8 | p[i + 1];
    if (n & 1) sum += (uint32_t)p[n - 1] << 8;
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

/* gredecap.py parse(), line for line. */
static enum reason parse(const uint8_t *p, size_t n, int verify, size_t *off, size_t *len) {
    if (n < 20) return SHORT_OUTER;
    if (p[0] >> 4 != 4) return NOT_IPV4_OUTER;
    size_t ihl = (size_t)(p[0] & 0x0F) * 4;
    if (ihl < 20 || ihl > n) return BAD_OUTER_IHL;
    unsigned frag = (unsigned)p[6] << 8 | p[7];
    if (frag & 0x3FFF) return OUTER_FRAGMENT;
    if (p[9] != IPPROTO_GRE_) return NOT_GRE;
    size_t total = (size_t)p[2] << 8 | p[3];
    size_t end = total >= ihl ? (n < total ? n : total) : n;
    size_t g = ihl;
    if (end - g < 4) return SHORT_GRE;
    unsigned flags = (unsigned)p[g] << 8 | p[g + 1];
    unsigned proto = (unsigned)p[g + 2] << 8 | p[g + 3];
    if (flags & GRE_VERSION) return GRE_VERSION_R;
    if (flags & GRE_R) return GRE_ROUTING;
    if (flags & (GRE_SSR | GRE_RECUR | 0x00F8)) return GRE_RESERVED;
    size_t hlen = 4 + 4 * !!(flags & GRE_C) + 4 * !!(flags & GRE_K) + 4 * !!(flags & GRE_S);
    if (end - g < hlen) return SHORT_GRE;
    if ((flags & GRE_C) && verify && checksum(p + g, end - g) != 0) return GRE_CHECKSUM;
    if (proto != ETH_P_IP_) return NOT_IPV4_INNER;
    size_t o = g + hlen, l = end - o;
    if (l < 20) return SHORT_INNER;
    uint8_t ib0 = p[o];
    size_t inner_total = (size_t)p[o + 2] << 8 | p[o + 3];
    if (ib0 >> 4 != 4 || (ib0 & 0x0F) < 5 || inner_total < (size_t)(ib0 & 0x0F) * 4 ||
        inner_total > l)
        return BAD_INNER;
    *off = o;
    *len = inner_total;
    return OK;
}

static volatile sig_atomic_t stop_now, stats_wanted;
static void on_stop(int s) { (void)s; stop_now = 1; }
static void on_usr1(int s) { (void)s; stats_wanted = 1; }

static const char *tun_name = "lbg-tun", *stats_path;
static uint64_t counts[N_REASONS], received, write_errors, inner_bytes, seq, batches;
static struct timespec started;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - started.tv_sec) + (t.tv_nsec - started.tv_nsec) / 1e9;
}

static void write_stats(void) {
    if (!stats_path) return;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec / 1e6;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", stats_path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    seq++;
    fprintf(f, "{\"pid\": %d, \"tun\": \"%s\", \"seq\": %llu, \"implementation\": \"c\", "
               "\"received\": %llu, \"decapsulated\": %llu, \"inner_bytes\": %llu, "
               "\"batches\": %llu, \"dropped\": {",
            (int)getpid(), tun_name, (unsigned long long)seq, (unsigned long long)received,
            (unsigned long long)counts[OK], (unsigned long long)inner_bytes,
            (unsigned long long)batches);
    int first = 1;
    for (int r = 1; r < N_REASONS; r++) {
        if (!counts[r]) continue;
        fprintf(f, "%s\"%s\": %llu", first ? "" : ", ", REASONS[r],
                (unsigned long long)counts[r]);
        first = 0;
    }
    fprintf(f, "}, \"write_errors\": %llu, \"cpu_s\": %.3f, \"wall_s\": %.3f}\n",
            (unsigned long long)write_errors, cpu, now_s());
    fclose(f);
    rename(tmp, stats_path);
}

static int selftest(void) {
    static uint8_t buf[BUF];
    uint8_t hdr[4];
    while (fread(hdr, 1, 4, stdin) == 4) {
        size_t n = (size_t)hdr[0] << 24 | hdr[1] << 16 | hdr[2] << 8 | hdr[3];
        if (n > BUF || fread(buf, 1, n, stdin) != n) return 2;
        size_t off = 0, len = 0;
        enum reason r = parse(buf, n, 1, &off, &len);
        printf("%zu %zu %s\n", r ? 0 : off, r ? 0 : len, r ? REASONS[r] : "-");
    }
    return 0;
}

int main(int argc, char **argv) {
    int mtu = 1500, verify = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--selftest")) return selftest();
        else if (!strcmp(argv[i], "--tun") && i + 1 < argc) tun_name = argv[++i];
        else if (!strcmp(argv[i], "--stats") && i + 1 < argc) stats_path = argv[++i];
        else if (!strcmp(argv[i], "--mtu") && i + 1 < argc) mtu = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-verify-checksum")) verify = 0;
        else {
            fprintf(stderr, "lblab-gredecap: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (strlen(tun_name) >= IFNAMSIZ || mtu < 68 || mtu > 65535) {
        fprintf(stderr, "lblab-gredecap: bad --tun or --mtu\n");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &started);
    int sock = socket(AF_INET, SOCK_RAW, IPPROTO_GRE_);
    if (sock < 0) { perror("lblab-gredecap: raw socket"); return 1; }
    int rcvbuf = 4 << 20;
    setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    int tun = open("/dev/net/tun", O_RDWR);
    if (tun < 0) { perror("lblab-gredecap: /dev/net/tun"); return 1; }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, tun_name, IFNAMSIZ - 1);
    if (ioctl(tun, TUNSETIFF, &ifr) < 0) { perror("lblab-gredecap: TUNSETIFF"); return 1; }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;           /* no SA_RESTART: recvmmsg returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);

    char cmd[512];
    snprintf(cmd, sizeof cmd, "ip link set dev %s mtu %d up && sysctl -qw "
             "net.ipv4.conf.%s.rp_filter=0 net.ipv4.conf.all.rp_filter=0 "
             "net.ipv6.conf.%s.disable_ipv6=1", tun_name, mtu, tun_name, tun_name);
    if (system(cmd) != 0) fprintf(stderr, "lblab-gredecap: bringing %s up failed\n", tun_name);
    write_stats();

    static uint8_t bufs[BATCH][BUF];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = BUF;
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    while (!stop_now) {
        if (stats_wanted) { stats_wanted = 0; write_stats(); }
        int got = recvmmsg(sock, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (got < 0) {
            if (errno == EINTR) continue;
            perror("lblab-gredecap: recvmmsg");
            break;
        }
        batches++;
        for (int i = 0; i < got; i++) {
            received++;
            size_t off = 0, len = 0;
            enum reason r = parse(bufs[i], msgs[i].msg_len, verify, &off, &len);
            counts[r]++;
            if (r) continue;
            if (write(tun, bufs[i] + off, len) < 0) {
                counts[OK]--;
                write_errors++;
                continue;
            }
            inner_bytes += len;
        }
    }
    write_stats();
    return 0;
}
