/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <nftables/libnftables.h>

#include "fd-util.h"
#include "fs-util.h"
#include "log.h"
#include "macro.h"
#include "net.h"
#include "strv.h"

#ifndef IFF_LOWER_UP
#define IFF_LOWER_UP 0x10000 /* linux/if.h, which clashes with net/if.h */
#endif

/* 100.64.0.0/16, cut into one /30 per slot. */
#define NAT_NET_BASE 0x64400000U
#define NAT_IFNAME_PREFIX "kv"
#define NAT_PEER_IFNAME "eth0"

/* Held by net_nat_setup() from the table check until its link exists, and by
 * net_gc() from listing the links until the table is gone: otherwise a
 * collection could delete the table between another process's check and its
 * new link, leaving that sandbox without isolation. */
#define NET_LOCK_PATH "/run/kiln-net.lock"

/* An empty chain whose name is the version of the ruleset below: bump it with
 * every change, and the next NAT setup replaces an older table. Looking it up
 * costs one netlink round trip; replacing the table costs milliseconds, since
 * the kernel has to swap base chain hooks. */
#define NAT_RULESET_MARKER "ruleset_v1"

/* The whole ruleset, keyed on the interface prefix only, so that nothing in it
 * is per sandbox. It is installed as one transaction that replaces any older
 * version of the table: "add" makes the "delete" valid when the table does not
 * exist yet. Drops in our base chains are final whatever other tables accept;
 * our accepts are not, so a host firewall that drops forwarded traffic wins. */
static const char nat_ruleset[] =
        "add table inet kiln\n"
        "delete table inet kiln\n"
        "table inet kiln {\n"
        "  chain " NAT_RULESET_MARKER " {\n"
        "  }\n"
        /* Before conntrack and before any DNAT of other tables, so that an
         * address of the host cannot be reached through a port forward either. */
        "  chain prerouting {\n"
        "    type filter hook prerouting priority raw; policy accept;\n"
        "    iifname != \"kv*\" return\n"
        "    meta nfproto ipv6 drop\n"
        /* Strict reverse-path check: a sandbox can only use its own /30. */
        "    fib saddr . iif oif missing drop\n"
        "    fib daddr type local drop\n"
        "    ip daddr { 100.64.0.0/16, 169.254.0.0/16 } drop\n"
        "  }\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        "    iifname \"kv*\" drop\n"
        "  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        "    iifname \"kv*\" oifname \"kv*\" drop\n"
        "    oifname \"kv*\" ct state established,related accept\n"
        "    oifname \"kv*\" drop\n"
        /* The veth has MTU 1500 whatever the uplink has. */
        "    iifname \"kv*\" tcp flags syn tcp option maxseg size set rt mtu\n"
        "    iifname \"kv*\" accept\n"
        "  }\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        "    iifname \"kv*\" oifname != \"kv*\" masquerade\n"
        "  }\n"
        "}\n";

static const char nat_ruleset_delete[] =
        "add table inet kiln\n"
        "delete table inet kiln\n";

/* ---- a minimal rtnetlink client ---- */

#define NL_MSG_MAX 1024U
#define NL_RECV_MAX (64U * 1024U)

typedef struct NlMsg {
        size_t len;
        bool overflow;
        union {
                struct nlmsghdr hdr;
                uint8_t buf[NL_MSG_MAX];
        };
} NlMsg;

typedef struct NlSock {
        int fd;
        uint32_t seq;
        uint8_t *buf; /* NL_RECV_MAX bytes */
} NlSock;

/* Called for every reply message but the final ACK/DONE. */
typedef int (*NlReplyFn)(const struct nlmsghdr *h, void *userdata);

static void nl_msg_init(NlMsg *m, uint16_t type, uint16_t flags, const void *fam, size_t fam_len) {
        memset(m, 0, sizeof *m);
        m->hdr.nlmsg_type = type;
        m->hdr.nlmsg_flags = NLM_F_REQUEST | flags;
        m->len = NLMSG_SPACE(fam_len);
        memcpy(m->buf + NLMSG_HDRLEN, fam, fam_len);
}

/* Appends raw bytes, padded to the netlink alignment. Overflow is sticky and
 * reported by nl_call(). */
static void nl_append(NlMsg *m, const void *data, size_t len) {
        if (m->overflow || NLMSG_ALIGN(len) > sizeof m->buf - m->len) {
                m->overflow = true;
                return;
        }
        memcpy(m->buf + m->len, data, len);
        m->len += NLMSG_ALIGN(len);
}

static void nl_put(NlMsg *m, uint16_t type, const void *data, size_t len) {
        struct rtattr rta = { .rta_len = (unsigned short) RTA_LENGTH(len), .rta_type = type };

        if (len > UINT16_MAX - RTA_LENGTH(0) || RTA_SPACE(len) > sizeof m->buf - m->len) {
                m->overflow = true;
                return;
        }
        nl_append(m, &rta, sizeof rta);
        if (len > 0)
                nl_append(m, data, len);
}

static void nl_put_u32(NlMsg *m, uint16_t type, uint32_t v) {
        nl_put(m, type, &v, sizeof v);
}

static void nl_put_str(NlMsg *m, uint16_t type, const char *s) {
        nl_put(m, type, s, strlen(s) + 1);
}

static size_t nl_nest_begin(NlMsg *m, uint16_t type) {
        size_t off = m->len;
        nl_put(m, type, NULL, 0);
        return off;
}

static void nl_nest_end(NlMsg *m, size_t off) {
        if (m->overflow)
                return;
        ((struct rtattr *) (m->buf + off))->rta_len = (unsigned short) (m->len - off);
}

static void nl_log_ext_ack(const struct nlmsghdr *h, const struct nlmsgerr *e) {
        size_t off;

        if (!(h->nlmsg_flags & NLM_F_ACK_TLVS))
                return;
        off = NLMSG_HDRLEN + sizeof(struct nlmsgerr);
        if (!(h->nlmsg_flags & NLM_F_CAPPED))
                off += NLMSG_ALIGN(e->msg.nlmsg_len) - NLMSG_HDRLEN;
        if (off >= h->nlmsg_len)
                return;
        int left = (int) (h->nlmsg_len - off);
        for (const struct rtattr *a = (const struct rtattr *) ((const uint8_t *) h + off); RTA_OK(a, left);
             a = RTA_NEXT(a, left))
                if (a->rta_type == NLMSGERR_ATTR_MSG && RTA_PAYLOAD(a) > 0 &&
                    memchr(RTA_DATA(a), 0, RTA_PAYLOAD(a)))
                        log_debug("rtnetlink: %s", (const char *) RTA_DATA(a));
}

static int nl_socket_open(int protocol) {
        int one = 1;
        int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
        if (fd < 0)
                return -errno;
        /* Both only make error replies more useful; old kernels lack them. */
        (void) setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
        (void) setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
        return fd;
}

static void nl_sock_done(NlSock *nl) {
        nl->fd = safe_close(nl->fd);
        nl->buf = mfree(nl->buf);
}

/* Takes ownership of fd, also on failure. */
static int nl_sock_init(NlSock *nl, int fd) {
        *nl = (NlSock) { .fd = fd };
        if (fd < 0)
                return fd;
        nl->buf = malloc(NL_RECV_MAX);
        if (!nl->buf) {
                nl_sock_done(nl);
                return -ENOMEM;
        }
        return 0;
}

/* Sends one request and reads up to its ACK (or, for dumps, NLMSG_DONE).
 * Returns the kernel's error, or the first error of fn. */
static int nl_call(NlSock *nl, NlMsg *m, NlReplyFn fn, void *userdata) {
        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
        int r = 0;

        if (m->overflow)
                return -ENOBUFS;
        m->hdr.nlmsg_len = (uint32_t) m->len;
        m->hdr.nlmsg_seq = ++nl->seq;
        m->hdr.nlmsg_flags |= NLM_F_ACK;
        while (sendto(nl->fd, m->buf, m->len, 0, (struct sockaddr *) &kernel, sizeof kernel) < 0)
                if (errno != EINTR)
                        return -errno;

        for (;;) {
                struct sockaddr_nl from = {};
                struct iovec iov = { .iov_base = nl->buf, .iov_len = NL_RECV_MAX };
                struct msghdr mh = { .msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov,
                                     .msg_iovlen = 1 };
                ssize_t n = recvmsg(nl->fd, &mh, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (mh.msg_flags & MSG_TRUNC)
                        return -EMSGSIZE;
                if (from.nl_pid != 0)
                        continue;

                unsigned left = (unsigned) n;
                for (struct nlmsghdr *h = (struct nlmsghdr *) nl->buf; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
                        if (h->nlmsg_seq != m->hdr.nlmsg_seq)
                                continue; /* late replies to an earlier, abandoned request */
                        if (h->nlmsg_type == NLMSG_ERROR) {
                                if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr)))
                                        return -EBADMSG;
                                const struct nlmsgerr *e = NLMSG_DATA(h);
                                if (e->error < 0) {
                                        nl_log_ext_ack(h, e);
                                        return e->error;
                                }
                                return r;
                        }
                        if (h->nlmsg_type == NLMSG_DONE) {
                                if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int))) {
                                        int e = *(const int *) NLMSG_DATA(h);
                                        if (e < 0)
                                                return e;
                                }
                                return r;
                        }
                        if (fn && r >= 0)
                                r = fn(h, userdata);
                }
        }
}

static int reply_ifindex(const struct nlmsghdr *h, void *userdata) {
        if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg)))
                return -EBADMSG;
        *(int *) userdata = ((const struct ifinfomsg *) NLMSG_DATA(h))->ifi_index;
        return 0;
}

static int nl_link_ifindex(NlSock *nl, const char *name, int *ret) {
        struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };
        NlMsg m;
        int ifindex = 0, r;

        nl_msg_init(&m, RTM_GETLINK, 0, &ifi, sizeof ifi);
        nl_put_str(&m, IFLA_IFNAME, name);
        nl_put_u32(&m, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        r = nl_call(nl, &m, reply_ifindex, &ifindex);
        if (r < 0)
                return r;
        if (ifindex <= 0)
                return -ENODEV;
        *ret = ifindex;
        return 0;
}

static int nl_link_up(NlSock *nl, int ifindex) {
        struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC, .ifi_index = ifindex, .ifi_flags = IFF_UP,
                                 .ifi_change = IFF_UP };
        NlMsg m;

        nl_msg_init(&m, RTM_NEWLINK, 0, &ifi, sizeof ifi);
        return nl_call(nl, &m, NULL, NULL);
}

static int reply_link_active(const struct nlmsghdr *h, void *userdata) {
        bool *active = userdata;
        bool queue = false;

        if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg)))
                return -EBADMSG;
        const struct ifinfomsg *ifi = NLMSG_DATA(h);
        int left = (int) (h->nlmsg_len - NLMSG_LENGTH(sizeof(struct ifinfomsg)));
        for (const struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, left); a = RTA_NEXT(a, left))
                if (a->rta_type == IFLA_QDISC && RTA_PAYLOAD(a) > 0 &&
                    ((const char *) RTA_DATA(a))[RTA_PAYLOAD(a) - 1] == 0)
                        queue = !streq((const char *) RTA_DATA(a), "noop");
        *active = (ifi->ifi_flags & IFF_LOWER_UP) && queue;
        return 0;
}

/* A veth's carrier comes on as soon as both ends are up, but the kernel
 * attaches the device's real queue only later, from its linkwatch work; until
 * then the "noop" queue drops every packet sent. A lost first SYN would cost
 * the sandbox's first connection a second, a lost DNS query five. So setup
 * returns only once both ends can carry packets: typically after a few
 * polls, well under a millisecond. */
#define LINK_ACTIVE_TIMEOUT_USEC (3U * 1000U * 1000U)

static int nl_link_wait_active(NlSock *nl, int ifindex) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + LINK_ACTIVE_TIMEOUT_USEC;

        for (long delay_ns = 20000;; delay_ns = MIN(delay_ns * 2, 5000000L)) {
                struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC, .ifi_index = ifindex };
                bool active = false;
                NlMsg m;

                nl_msg_init(&m, RTM_GETLINK, 0, &ifi, sizeof ifi);
                nl_put_u32(&m, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
                int r = nl_call(nl, &m, reply_link_active, &active);
                if (r < 0)
                        return r;
                if (active)
                        return 0;
                if (now_usec(CLOCK_MONOTONIC) > deadline)
                        return -ETIMEDOUT;
                (void) nanosleep(&(struct timespec) { .tv_nsec = delay_ns }, NULL);
        }
}

/* A missing link is not an error. */
static int nl_link_delete(NlSock *nl, const char *name) {
        struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };
        NlMsg m;

        nl_msg_init(&m, RTM_DELLINK, 0, &ifi, sizeof ifi);
        nl_put_str(&m, IFLA_IFNAME, name);
        int r = nl_call(nl, &m, NULL, NULL);
        return r == -ENODEV ? 0 : r;
}

/* Creates the pair with the peer directly in the target namespace under its
 * final name: no rename, and it never appears in the host's namespace. */
static int nl_veth_create(NlSock *nl, const char *name, const char *peer_name, int peer_netns_fd) {
        struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };
        NlMsg m;

        nl_msg_init(&m, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifi, sizeof ifi);
        nl_put_str(&m, IFLA_IFNAME, name);
        size_t linkinfo = nl_nest_begin(&m, IFLA_LINKINFO);
        nl_put_str(&m, IFLA_INFO_KIND, "veth");
        size_t data = nl_nest_begin(&m, IFLA_INFO_DATA);
        size_t peer = nl_nest_begin(&m, VETH_INFO_PEER);
        nl_append(&m, &ifi, sizeof ifi);
        nl_put_str(&m, IFLA_IFNAME, peer_name);
        nl_put_u32(&m, IFLA_NET_NS_FD, (uint32_t) peer_netns_fd);
        nl_nest_end(&m, peer);
        nl_nest_end(&m, data);
        nl_nest_end(&m, linkinfo);
        return nl_call(nl, &m, NULL, NULL);
}

static int nl_addr_add(NlSock *nl, int ifindex, struct in_addr addr, unsigned prefixlen, struct in_addr brd) {
        struct ifaddrmsg ifa = { .ifa_family = AF_INET, .ifa_prefixlen = (unsigned char) prefixlen,
                                 .ifa_scope = RT_SCOPE_UNIVERSE, .ifa_index = (unsigned) ifindex };
        NlMsg m;

        nl_msg_init(&m, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &ifa, sizeof ifa);
        nl_put(&m, IFA_LOCAL, &addr, sizeof addr);
        nl_put(&m, IFA_ADDRESS, &addr, sizeof addr);
        nl_put(&m, IFA_BROADCAST, &brd, sizeof brd);
        return nl_call(nl, &m, NULL, NULL);
}

static int nl_route_add_default(NlSock *nl, int ifindex, struct in_addr gateway) {
        struct rtmsg rtm = { .rtm_family = AF_INET, .rtm_table = RT_TABLE_MAIN, .rtm_protocol = RTPROT_STATIC,
                             .rtm_scope = RT_SCOPE_UNIVERSE, .rtm_type = RTN_UNICAST };
        NlMsg m;

        nl_msg_init(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &rtm, sizeof rtm);
        nl_put(&m, RTA_GATEWAY, &gateway, sizeof gateway);
        nl_put_u32(&m, RTA_OIF, (uint32_t) ifindex);
        return nl_call(nl, &m, NULL, NULL);
}

/* ---- names, addresses, sysctls ---- */

static void nat_ifname(unsigned slot, char buf[static IFNAMSIZ]) {
        snprintf(buf, IFNAMSIZ, NAT_IFNAME_PREFIX "%u", slot);
}

/* Only the canonical spelling of a valid slot counts as ours. */
static bool nat_ifname_is_ours(const char *name) {
        const char *p;
        unsigned long v = 0;

        if (!strneq(name, NAT_IFNAME_PREFIX, strlen(NAT_IFNAME_PREFIX)))
                return false;
        p = name + strlen(NAT_IFNAME_PREFIX);
        if (!*p || (p[0] == '0' && p[1]))
                return false;
        for (; *p; p++) {
                if (*p < '0' || *p > '9')
                        return false;
                v = v * 10 + (unsigned long) (*p - '0');
                if (v >= NET_SLOT_MAX)
                        return false;
        }
        return true;
}

static struct in_addr nat_addr(unsigned slot, unsigned host_part) {
        return (struct in_addr) { .s_addr = htonl(NAT_NET_BASE + 4U * slot + host_part) };
}

static int sysctl_disable_ipv6(const char *ifname) {
        char path[128];

        snprintf(path, sizeof path, "/proc/sys/net/ipv6/conf/%s/disable_ipv6", ifname);
        int r = write_string_file(path, "1");
        /* No IPv6 in this kernel: nothing to disable. */
        return r == -ENOENT ? 0 : r;
}

static int sysctl_enable_ip_forward(void) {
        const char *path = "/proc/sys/net/ipv4/ip_forward";
        _cleanup_free_ char *v = NULL;

        int r = read_full_file(path, 64, &v, NULL);
        if (r < 0)
                return r;
        if (v[0] == '1')
                return 0;
        return write_string_file(path, "1");
}

static int net_lock(void) {
        int fd = open(NET_LOCK_PATH, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0)
                return -errno;
        while (flock(fd, LOCK_EX) < 0)
                if (errno != EINTR) {
                        int r = -errno;
                        safe_close(fd);
                        return r;
                }
        return fd;
}

/* ---- nftables ---- */

/* libnftables is not documented to be thread-safe (it sets up global state
 * such as its GMP allocator); one context at a time. */
static pthread_mutex_t nft_lock = PTHREAD_MUTEX_INITIALIZER;

static void nft_ctx_freep(struct nft_ctx **ctx) {
        if (*ctx)
                nft_ctx_free(*ctx);
}

static int nft_run_unlocked(const char *cmd) {
        _cleanup_(nft_ctx_freep) struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);

        if (!ctx)
                return -ENOMEM;
        /* Buffered, so that the library prints nothing on our stdout/stderr. */
        if (nft_ctx_buffer_output(ctx) < 0 || nft_ctx_buffer_error(ctx) < 0)
                return -ENOMEM;
        if (nft_run_cmd_from_buffer(ctx, cmd) != 0) {
                /* The library reports no errno; its message says what failed. */
                const char *e = nft_ctx_get_error_buffer(ctx);
                log_debug("nftables: %s", e ? e : "(no message)");
                return -EIO;
        }
        return 0;
}

static int nft_run(const char *cmd) {
        pthread_mutex_lock(&nft_lock);
        int r = nft_run_unlocked(cmd);
        pthread_mutex_unlock(&nft_lock);
        return r;
}

/* 1 if the current version of the table is installed, 0 if not. */
static int nat_ruleset_present(void) {
        _cleanup_(nl_sock_done) NlSock nl = { .fd = -EBADF };
        struct nfgenmsg g = { .nfgen_family = NFPROTO_INET, .version = NFNETLINK_V0 };
        NlMsg m;
        int r;

        r = nl_sock_init(&nl, nl_socket_open(NETLINK_NETFILTER));
        if (r < 0)
                return r;
        nl_msg_init(&m, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN, 0, &g, sizeof g);
        nl_put_str(&m, NFTA_CHAIN_TABLE, "kiln");
        nl_put_str(&m, NFTA_CHAIN_NAME, NAT_RULESET_MARKER);
        r = nl_call(&nl, &m, NULL, NULL);
        if (r == -ENOENT)
                return 0;
        return r < 0 ? r : 1;
}

static int nat_ruleset_install(void) {
        int r = nat_ruleset_present();
        if (r < 0)
                return r;
        if (r > 0)
                return 0;
        return nft_run(nat_ruleset);
}

/* ---- a rtnetlink socket inside another network namespace ---- */

typedef struct NetnsSocket {
        int netns_fd;
        int fd;
        int error;
} NetnsSocket;

/* Runs in a thread of its own: setns() changes only the calling thread's
 * namespace, and the thread ends right after. A netlink socket stays bound to
 * the namespace it was created in, and /proc/sys/net follows the opening
 * thread's namespace. */
static void *netns_socket_thread(void *userdata) {
        NetnsSocket *a = userdata;
        int r;

        if (setns(a->netns_fd, CLONE_NEWNET) < 0) {
                a->error = -errno;
                return NULL;
        }
        /* Before the peer goes up, so that it never gets an IPv6 link-local
         * address: the sandbox has no IPv6 path anywhere, the host included. */
        r = sysctl_disable_ipv6(NAT_PEER_IFNAME);
        if (r < 0) {
                a->error = r;
                return NULL;
        }
        a->fd = nl_socket_open(NETLINK_ROUTE);
        if (a->fd < 0)
                a->error = a->fd;
        return NULL;
}

static int netns_nl_socket(int netns_fd, int *ret_fd) {
        NetnsSocket a = { .netns_fd = netns_fd, .fd = -EBADF };
        pthread_attr_t attr;
        pthread_t t;
        sigset_t all;
        int r;

        r = pthread_attr_init(&attr);
        if (r != 0)
                return -r;
        /* No signal of the caller's may land on this thread. */
        sigfillset(&all);
        r = pthread_attr_setsigmask_np(&attr, &all);
        if (r == 0)
                r = pthread_create(&t, &attr, netns_socket_thread, &a);
        pthread_attr_destroy(&attr);
        if (r != 0)
                return -r;
        r = pthread_join(t, NULL);
        if (r != 0)
                return -r; /* cannot happen with a joinable thread of ours */
        if (a.error < 0) {
                safe_close(a.fd);
                return a.error;
        }
        *ret_fd = a.fd;
        return 0;
}

/* ---- the API ---- */

int net_loopback_up(void) {
        struct ifreq ifr = { .ifr_name = "lo" };
        _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return -errno;
        if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
                return -errno;
        if (ifr.ifr_flags & IFF_UP)
                return 0;
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
                return -errno;
        return 0;
}

static int nat_configure_host(NlSock *nl, const char *ifname, unsigned slot, int *ret_ifindex) {
        int ifindex, r;

        r = sysctl_disable_ipv6(ifname);
        if (r < 0)
                return log_debug_errno(r, "Failed to disable IPv6 on '%s': %m", ifname);
        r = nl_link_ifindex(nl, ifname, &ifindex);
        if (r < 0)
                return log_debug_errno(r, "Failed to look up '%s': %m", ifname);
        r = nl_addr_add(nl, ifindex, nat_addr(slot, 1), 30, nat_addr(slot, 3));
        if (r < 0)
                return log_debug_errno(r, "Failed to add an address to '%s': %m", ifname);
        r = nl_link_up(nl, ifindex);
        if (r < 0)
                return log_debug_errno(r, "Failed to bring up '%s': %m", ifname);
        *ret_ifindex = ifindex;
        return 0;
}

static int nat_configure_sandbox(int netns_fd, unsigned slot) {
        _cleanup_(nl_sock_done) NlSock nl = { .fd = -EBADF };
        int fd = -EBADF, ifindex, r;

        r = netns_nl_socket(netns_fd, &fd);
        if (r < 0)
                return log_debug_errno(r, "Failed to open rtnetlink in the sandbox's namespace: %m");
        r = nl_sock_init(&nl, fd);
        if (r < 0)
                return r;
        r = nl_link_ifindex(&nl, NAT_PEER_IFNAME, &ifindex);
        if (r < 0)
                return log_debug_errno(r, "Failed to look up the sandbox's eth0: %m");
        r = nl_addr_add(&nl, ifindex, nat_addr(slot, 2), 30, nat_addr(slot, 3));
        if (r < 0)
                return log_debug_errno(r, "Failed to add the sandbox's address: %m");
        r = nl_link_up(&nl, ifindex);
        if (r < 0)
                return log_debug_errno(r, "Failed to bring up the sandbox's eth0: %m");
        r = nl_route_add_default(&nl, ifindex, nat_addr(slot, 1));
        if (r < 0)
                return log_debug_errno(r, "Failed to add the sandbox's default route: %m");
        r = nl_link_wait_active(&nl, ifindex);
        if (r < 0)
                return log_debug_errno(r, "The sandbox's eth0 did not become active: %m");
        return 0;
}

int net_nat_setup(int netns_fd, unsigned slot) {
        _cleanup_(nl_sock_done) NlSock nl = { .fd = -EBADF };
        _cleanup_close_ int lock = -EBADF;
        char ifname[IFNAMSIZ];
        int r;

        if (netns_fd < 0 || slot >= NET_SLOT_MAX)
                return -EINVAL;
        nat_ifname(slot, ifname);

        lock = net_lock();
        if (lock < 0)
                return log_debug_errno(lock, "Failed to lock '%s': %m", NET_LOCK_PATH);

        /* The isolation rules exist before any link of a sandbox is up, and
         * forwarding is only switched on once they do. */
        r = nat_ruleset_install();
        if (r < 0)
                return log_debug_errno(r, "Failed to install the nftables table 'inet kiln': %m");
        r = sysctl_enable_ip_forward();
        if (r < 0)
                return log_debug_errno(r, "Failed to enable net.ipv4.ip_forward: %m");

        r = nl_sock_init(&nl, nl_socket_open(NETLINK_ROUTE));
        if (r < 0)
                return r;
        /* The slot is free by contract: a link still named after it belongs to
         * a dead sandbox whose namespace the kernel has not released yet. */
        r = nl_link_delete(&nl, ifname);
        if (r < 0)
                return log_debug_errno(r, "Failed to remove the leftover '%s': %m", ifname);
        r = nl_veth_create(&nl, ifname, NAT_PEER_IFNAME, netns_fd);
        if (r < 0)
                return log_debug_errno(r, "Failed to create the veth pair '%s': %m", ifname);

        int host_ifindex = 0;
        r = nat_configure_host(&nl, ifname, slot, &host_ifindex);
        if (r >= 0)
                r = nat_configure_sandbox(netns_fd, slot);
        if (r >= 0) {
                r = nl_link_wait_active(&nl, host_ifindex);
                if (r < 0)
                        log_debug_errno(r, "'%s' did not become active: %m", ifname);
        }
        if (r < 0) {
                /* Deleting one end takes the peer with it. */
                (void) nl_link_delete(&nl, ifname);
                return r;
        }
        return 0;
}

int net_nat_teardown(unsigned slot) {
        _cleanup_(nl_sock_done) NlSock nl = { .fd = -EBADF };
        char ifname[IFNAMSIZ];
        int r;

        if (slot >= NET_SLOT_MAX)
                return -EINVAL;
        nat_ifname(slot, ifname);
        r = nl_sock_init(&nl, nl_socket_open(NETLINK_ROUTE));
        if (r < 0)
                return r;
        return nl_link_delete(&nl, ifname);
}

static int reply_count_ours(const struct nlmsghdr *h, void *userdata) {
        unsigned *n = userdata;

        if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg)))
                return 0;
        int left = (int) (h->nlmsg_len - NLMSG_LENGTH(sizeof(struct ifinfomsg)));
        for (const struct rtattr *a = IFLA_RTA(NLMSG_DATA(h)); RTA_OK(a, left); a = RTA_NEXT(a, left)) {
                if (a->rta_type != IFLA_IFNAME)
                        continue;
                const char *name = RTA_DATA(a);
                if (RTA_PAYLOAD(a) > 0 && RTA_PAYLOAD(a) <= IFNAMSIZ && name[RTA_PAYLOAD(a) - 1] == 0 &&
                    nat_ifname_is_ours(name))
                        (*n)++;
                break;
        }
        return 0;
}

int net_gc(bool any_nat_sandbox_alive) {
        _cleanup_(nl_sock_done) NlSock nl = { .fd = -EBADF };
        _cleanup_close_ int lock = -EBADF;
        struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };
        unsigned n_links = 0;
        NlMsg m;
        int r;

        if (any_nat_sandbox_alive)
                return 0;

        lock = net_lock();
        if (lock < 0)
                return log_debug_errno(lock, "Failed to lock '%s': %m", NET_LOCK_PATH);
        r = nl_sock_init(&nl, nl_socket_open(NETLINK_ROUTE));
        if (r < 0)
                return r;
        nl_msg_init(&m, RTM_GETLINK, NLM_F_DUMP, &ifi, sizeof ifi);
        nl_put_u32(&m, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        r = nl_call(&nl, &m, reply_count_ours, &n_links);
        if (r < 0)
                return log_debug_errno(r, "Failed to list network links: %m");
        if (n_links > 0)
                return log_debug_errno(EBUSY, "%u kv* links left, keeping table 'inet kiln'", n_links);
        r = nft_run(nat_ruleset_delete);
        if (r < 0)
                return log_debug_errno(r, "Failed to delete the nftables table 'inet kiln': %m");
        return 0;
}

/* ---- resolv.conf ---- */

#define RESOLV_CONF_MAX (64U * 1024U)
#define RESOLV_NAMESERVERS_MAX 3 /* what glibc reads */

/* A sandbox reaches neither the host's loopback nor anything link-local, and
 * has no IPv6 at all: such servers would only cost every lookup a timeout. */
static bool nameserver_reachable(const char *s) {
        struct in_addr a;

        if (inet_pton(AF_INET, s, &a) != 1)
                return false;
        uint32_t h = ntohl(a.s_addr);
        if ((h >> 24) == 127 || (h >> 24) == 0) /* loopback, "this host" */
                return false;
        if ((h >> 16) == 0xa9fe) /* 169.254.0.0/16 */
                return false;
        if ((h >> 16) == (NAT_NET_BASE >> 16)) /* sandboxes and their host ends */
                return false;
        if (h >= 0xe0000000U) /* multicast, reserved, broadcast */
                return false;
        return true;
}

/* Splits off the next whitespace-separated word of *p. */
static size_t next_word(const char **p, const char **ret_word) {
        const char *s = *p + strspn(*p, " \t");
        size_t n = strcspn(s, " \t");
        *ret_word = s;
        *p = s + n;
        return n;
}

/* Collects the usable nameservers and the search/domain/options lines of one
 * resolv.conf text; the latter are kept verbatim, in order. */
static int resolv_conf_parse(const char *text, char ***servers, char ***other) {
        for (const char *line = text; line && *line;) {
                const char *eol = strchr(line, '\n');
                size_t len = eol ? (size_t) (eol - line) : strlen(line);
                _cleanup_free_ char *l = strndup(line, len);
                const char *p, *word;
                size_t n;
                int r;

                line = eol ? eol + 1 : NULL;
                if (!l)
                        return -ENOMEM;
                l[strcspn(l, "\r")] = 0;
                p = l;
                n = next_word(&p, &word);
                if (n == 0 || word[0] == '#' || word[0] == ';')
                        continue;
                if (n == strlen("nameserver") && strneq(word, "nameserver", n)) {
                        char addr[INET6_ADDRSTRLEN + 16];
                        n = next_word(&p, &word);
                        if (n == 0 || n >= sizeof addr)
                                continue;
                        memcpy(addr, word, n);
                        addr[n] = 0;
                        if (!nameserver_reachable(addr) || strv_length(*servers) >= RESOLV_NAMESERVERS_MAX)
                                continue;
                        r = strv_extend(servers, addr);
                } else if ((n == strlen("search") && strneq(word, "search", n)) ||
                           (n == strlen("domain") && strneq(word, "domain", n)) ||
                           (n == strlen("options") && strneq(word, "options", n))) {
                        r = strv_extend(other, word);
                } else
                        continue;
                if (r < 0)
                        return r;
        }
        return 0;
}

static int resolv_conf_read(const char *path, char ***servers, char ***other) {
        _cleanup_free_ char *text = NULL;

        if (!path)
                return 0;
        int r = read_full_file(path, RESOLV_CONF_MAX, &text, NULL);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        return resolv_conf_parse(text, servers, other);
}

static int resolv_conf_format(char *const *servers, char *const *other, const char *source, char **ret) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return -ENOMEM;
        if (!servers || !servers[0])
                fputs("# Generated by kiln: the host names no nameserver that a sandbox can reach\n"
                      "# (loopback, link-local and IPv6 servers are not reachable from a sandbox).\n",
                      f);
        else {
                fprintf(f, "# Generated by kiln from %s.\n", source);
                for (char *const *s = servers; *s; s++)
                        fprintf(f, "nameserver %s\n", *s);
                for (char *const *s = other; s && *s; s++)
                        fprintf(f, "%s\n", *s);
        }
        if (fclose(f) != 0)
                return -ENOMEM;
        *ret = TAKE_PTR(buf);
        return 0;
}

int net_resolv_conf_from(const char *path, const char *fallback_path, char **ret) {
        _cleanup_strv_free_ char **servers = NULL, **other = NULL;
        int r;

        r = resolv_conf_read(path, &servers, &other);
        if (r < 0)
                return r;
        if (!servers && fallback_path) {
                other = strv_free(other);
                r = resolv_conf_read(fallback_path, &servers, &other);
                if (r < 0)
                        return r;
                return resolv_conf_format(servers, other, fallback_path, ret);
        }
        return resolv_conf_format(servers, other, path, ret);
}

int net_resolv_conf(char **ret) {
        /* With systemd-resolved, /etc/resolv.conf names only its stub at
         * 127.0.0.53; this file lists the servers the stub forwards to. */
        return net_resolv_conf_from("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf", ret);
}
