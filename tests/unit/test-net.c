/* SPDX-License-Identifier: MIT */
/* Sandbox networking against real namespaces. The resolv.conf part runs
 * everywhere; the rest needs root and skips without it.
 *
 * The test first moves into a network namespace of its own, which plays the
 * host. In it: two sandboxes (slots SLOT_A and SLOT_B) set up by
 * net_nat_setup(), and "ext", a stand-in for the outside world, connected to
 * the host by its own veth (198.18.0.1 host side, 198.18.0.2 ext side) and
 * also holding 169.254.169.254 as a fake metadata service. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nftables/libnftables.h>

#include "fd-util.h"
#include "fs-util.h"
#include "macro.h"
#include "net.h"
#include "test.h"

#define SLOT_A 16380U /* 100.64.255.240/30 */
#define SLOT_B 16381U /* 100.64.255.244/30 */
#define A_HOST "100.64.255.241"
#define A_SANDBOX "100.64.255.242"
#define B_HOST "100.64.255.245"
#define B_SANDBOX "100.64.255.246"
#define EXT_HOST_IF "ktest-ext0"
#define EXT_PEER_IF "ktest-ext1"
#define EXT_HOST "198.18.0.1"
#define EXT_ADDR "198.18.0.2"
#define METADATA "169.254.169.254"

static pid_t main_pid;
static const char *ip_bin;
static pid_t holders[4] = { -1, -1, -1, -1 }; /* sandbox A, sandbox B, ext, sandbox C */
static bool ext_link_made;

/* ---- resolv.conf, unprivileged ---- */

static char *write_tmp(const char *text) {
        char *path = strdup("/tmp/kiln-test-net-XXXXXX");
        CHECK(path);
        int fd = mkstemp(path);
        CHECK(fd >= 0);
        CHECK(loop_write(fd, text, strlen(text)) == 0);
        close(fd);
        return path;
}

static void test_resolv_conf(void) {
        _cleanup_free_ char *stub = write_tmp("# systemd-resolved stub\n"
                                              "nameserver 127.0.0.53\n"
                                              "options edns0 trust-ad\n"
                                              "search example.org\n");
        _cleanup_free_ char *upstream = write_tmp("nameserver 10.1.2.3\n"
                                                  "nameserver ::1\n"
                                                  "nameserver 2001:db8::53\n"
                                                  "  nameserver\t192.0.2.53  # trailing\r\n"
                                                  "search corp.example\n");
        _cleanup_free_ char *mixed = write_tmp("; comment\n"
                                               "nameserver 127.0.0.1\n"
                                               "nameserver 169.254.169.253\n"
                                               "nameserver 192.0.2.1\n"
                                               "nameserver 192.0.2.2\n"
                                               "nameserver 192.0.2.3\n"
                                               "nameserver 192.0.2.4\n"
                                               "nameserver 0.0.0.0\n"
                                               "nameserver 100.64.0.1\n"
                                               "sortlist 10.0.0.0/8\n"
                                               "domain example.net");
        _cleanup_free_ char *none = write_tmp("nameserver 127.0.0.53\nnameserver ::1\n");
        char *s;

        /* Only the stub: the upstream list replaces it, IPv6 servers dropped. */
        CHECK(net_resolv_conf_from(stub, upstream, &s) == 0);
        CHECK(strstr(s, "nameserver 10.1.2.3\nnameserver 192.0.2.53\n"));
        CHECK(!strstr(s, "127.0.0.53"));
        CHECK(!strstr(s, "::1"));
        CHECK(!strstr(s, "2001:db8"));
        CHECK(strstr(s, "\nsearch corp.example\n"));
        CHECK(!strstr(s, "example.org"));
        free(s);

        /* Usable servers in the primary file: the fallback is not read. */
        CHECK(net_resolv_conf_from(mixed, upstream, &s) == 0);
        CHECK(strstr(s, "nameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\ndomain example.net\n"));
        CHECK(!strstr(s, "192.0.2.4"));
        CHECK(!strstr(s, "127.0.0.1"));
        CHECK(!strstr(s, "169.254"));
        CHECK(!strstr(s, "0.0.0.0"));
        CHECK(!strstr(s, "100.64"));
        CHECK(!strstr(s, "sortlist"));
        CHECK(!strstr(s, "10.1.2.3"));
        free(s);

        /* Nothing usable anywhere, and missing files: a comment only. */
        CHECK(net_resolv_conf_from(none, "/nonexistent/resolv.conf", &s) == 0);
        CHECK(s[0] == '#');
        CHECK(!strstr(s, "\nnameserver"));
        free(s);
        CHECK(net_resolv_conf_from("/nonexistent/a", NULL, &s) == 0);
        CHECK(s[0] == '#');
        free(s);

        /* The real host: whatever it is, no loopback server may come out. */
        CHECK(net_resolv_conf(&s) == 0);
        CHECK(!strstr(s, "nameserver 127."));
        CHECK(!strstr(s, "nameserver ::1"));
        free(s);

        unlink(stub);
        unlink(upstream);
        unlink(mixed);
        unlink(none);
}

/* ---- helpers for the namespaces ---- */

static double now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

static int wait_child(pid_t pid) {
        int status;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* A process that only holds a fresh network namespace until it is killed. */
static pid_t netns_new(void) {
        int p[2];
        char c;

        CHECK(pipe2(p, O_CLOEXEC) == 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
                if (unshare(CLONE_NEWNET) < 0)
                        _exit(1);
                if (write(p[1], "x", 1) != 1)
                        _exit(1);
                for (;;)
                        pause();
        }
        close(p[1]);
        CHECK(read(p[0], &c, 1) == 1);
        close(p[0]);
        return pid;
}

static int netns_open(pid_t pid) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/net", (int) pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0);
        return fd;
}

/* A socket of the given type created inside the namespace of pid; it keeps
 * routing there whoever uses it. pid 0 means the test's own namespace. */
static int socket_in(pid_t pid, int family, int type) {
        int sp[2];

        if (pid == 0) {
                int fd = socket(family, type | SOCK_CLOEXEC, 0);
                CHECK(fd >= 0);
                return fd;
        }
        int nsfd = netns_open(pid);
        CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp) == 0);
        pid_t child = fork();
        CHECK(child >= 0);
        if (child == 0) {
                union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u = {};
                struct iovec iov = { .iov_base = (char *) "x", .iov_len = 1 };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                                     .msg_controllen = sizeof u.buf };
                if (setns(nsfd, CLONE_NEWNET) < 0)
                        _exit(1);
                int fd = socket(family, type | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        _exit(1);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof fd);
                _exit(sendmsg(sp[1], &mh, 0) == 1 ? 0 : 1);
        }
        close(sp[1]);
        close(nsfd);
        CHECK_EQ_INT(wait_child(child), 0);

        union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u = {};
        char x;
        struct iovec iov = { .iov_base = &x, .iov_len = 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                             .msg_controllen = sizeof u.buf };
        CHECK(recvmsg(sp[0], &mh, MSG_CMSG_CLOEXEC) == 1);
        close(sp[0]);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        CHECK(c && c->cmsg_type == SCM_RIGHTS);
        int fd;
        memcpy(&fd, CMSG_DATA(c), sizeof fd);
        return fd;
}

static struct sockaddr_in sin_of(const char *addr, uint16_t port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
        CHECK(inet_pton(AF_INET, addr, &sa.sin_addr) == 1);
        return sa;
}

static int listen_in(pid_t pid, const char *addr, uint16_t port) {
        int fd = socket_in(pid, AF_INET, SOCK_STREAM);
        int one = 1;
        struct sockaddr_in sa = sin_of(addr, port);
        CHECK(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
        CHECK(bind(fd, (struct sockaddr *) &sa, sizeof sa) == 0);
        CHECK(listen(fd, 8) == 0);
        CHECK(fd_set_nonblock(fd, true) == 0);
        return fd;
}

/* Connections that must fail get a second, those that must work five: a
 * SYN lost to a link that was still coming up is resent after one second. */
#define TIMEOUT_FAIL_MS 1000
#define TIMEOUT_OK_MS 5000

/* 0 when a TCP connection from pid's namespace to addr:port is established
 * within timeout_ms, -errno otherwise. */
static int connect_from(pid_t pid, const char *addr, uint16_t port, int timeout_ms) {
        _cleanup_close_ int fd = socket_in(pid, AF_INET, SOCK_STREAM);
        struct sockaddr_in sa = sin_of(addr, port);
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int err = 0;
        socklen_t len = sizeof err;

        CHECK(fd_set_nonblock(fd, true) == 0);
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0)
                return 0;
        if (errno != EINPROGRESS)
                return -errno;
        int n = poll(&p, 1, timeout_ms);
        CHECK(n >= 0);
        if (n == 0)
                return -ETIMEDOUT;
        CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0);
        return -err;
}

/* The source address of the connection waiting on a listener, or NULL. */
static const char *accept_peer(int listen_fd, char buf[static INET_ADDRSTRLEN]) {
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        int fd = accept4(listen_fd, (struct sockaddr *) &sa, &len, SOCK_CLOEXEC);
        if (fd < 0) {
                CHECK(errno == EAGAIN);
                return NULL;
        }
        close(fd);
        return inet_ntop(AF_INET, &sa.sin_addr, buf, INET_ADDRSTRLEN);
}

static void check_unreachable(pid_t from, const char *what, const char *addr, uint16_t port, int listen_fd) {
        char peer[INET_ADDRSTRLEN];
        int r = connect_from(from, addr, port, TIMEOUT_FAIL_MS);
        printf("  %-40s %s:%u -> %s\n", what, addr, port, r == 0 ? "CONNECTED" : strerror(-r));
        CHECK(r < 0);
        if (listen_fd >= 0)
                CHECK(!accept_peer(listen_fd, peer));
}

/* Runs ip(8) for the test's own plumbing, in pid's namespace (0: ours). */
static int run_ip(pid_t pid, const char *const *args) {
        const char *argv[16] = { "ip" };
        size_t n = 1;
        int nsfd = pid > 0 ? netns_open(pid) : -EBADF;

        for (; args[n - 1] && n < ELEMENTSOF(argv) - 1; n++)
                argv[n] = args[n - 1];
        argv[n] = NULL;
        pid_t child = fork();
        CHECK(child >= 0);
        if (child == 0) {
                if (nsfd >= 0 && setns(nsfd, CLONE_NEWNET) < 0)
                        _exit(126);
                execv(ip_bin, (char *const *) argv);
                _exit(127);
        }
        safe_close(nsfd);
        return wait_child(child);
}
#define IP(pid, ...) CHECK_EQ_INT(run_ip(pid, (const char *const[]) { __VA_ARGS__, NULL }), 0)

static bool nft_ok(const char *cmd) {
        struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
        CHECK(ctx);
        CHECK(nft_ctx_buffer_output(ctx) == 0 && nft_ctx_buffer_error(ctx) == 0);
        bool ok = nft_run_cmd_from_buffer(ctx, cmd) == 0;
        nft_ctx_free(ctx);
        return ok;
}

static bool nft_table_exists(void) {
        return nft_ok("list table inet kiln");
}

static void cleanup(void) {
        if (getpid() != main_pid)
                return;
        for (size_t i = 0; i < ELEMENTSOF(holders); i++)
                if (holders[i] > 0) {
                        kill(holders[i], SIGKILL);
                        (void) wait_child(holders[i]);
                        holders[i] = -1;
                }
        (void) net_nat_teardown(SLOT_A);
        (void) net_nat_teardown(SLOT_B);
        if (ext_link_made) {
                (void) run_ip(0, (const char *const[]) { "link", "del", EXT_HOST_IF, NULL });
                ext_link_made = false;
        }
        (void) net_gc(false);
}

/* ---- checks ---- */

static void check_addr(pid_t pid, const char *ifname, const char *addr, const char *mask) {
        _cleanup_close_ int fd = socket_in(pid, AF_INET, SOCK_DGRAM);
        struct ifreq ifr = {};
        char buf[INET_ADDRSTRLEN];

        snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
        CHECK(ioctl(fd, SIOCGIFFLAGS, &ifr) == 0);
        CHECK(ifr.ifr_flags & IFF_UP);
        CHECK(ioctl(fd, SIOCGIFADDR, &ifr) == 0);
        CHECK_STREQ(inet_ntop(AF_INET, &((struct sockaddr_in *) &ifr.ifr_addr)->sin_addr, buf, sizeof buf), addr);
        CHECK(ioctl(fd, SIOCGIFNETMASK, &ifr) == 0);
        CHECK_STREQ(inet_ntop(AF_INET, &((struct sockaddr_in *) &ifr.ifr_netmask)->sin_addr, buf, sizeof buf), mask);
}

/* The interface has no IPv6 address at all, not even a link-local one. */
static void check_no_ipv6(pid_t pid, const char *ifname) {
        char path[64];
        _cleanup_free_ char *s = NULL;

        snprintf(path, sizeof path, "/proc/%d/net/if_inet6", pid > 0 ? (int) pid : (int) getpid());
        int r = read_full_file(path, 1 << 20, &s, NULL);
        if (r == -ENOENT)
                return; /* no IPv6 in this kernel */
        CHECK(r == 0);
        char needle[IFNAMSIZ + 3];
        snprintf(needle, sizeof needle, " %s\n", ifname);
        CHECK(!strstr(s, needle));
}

static void check_default_route(pid_t pid, const char *gateway_hex) {
        char path[64];
        _cleanup_free_ char *s = NULL;
        char needle[64];

        snprintf(path, sizeof path, "/proc/%d/net/route", (int) pid);
        CHECK(read_full_file(path, 1 << 20, &s, NULL) == 0);
        snprintf(needle, sizeof needle, "\neth0\t00000000\t%s\t", gateway_hex);
        CHECK(strstr(s, needle));
}

static void check_loopback(pid_t pid) {
        int nsfd = netns_open(pid);
        pid_t child = fork();
        CHECK(child >= 0);
        if (child == 0)
                _exit(setns(nsfd, CLONE_NEWNET) < 0 || net_loopback_up() < 0 ? 1 : 0);
        close(nsfd);
        CHECK_EQ_INT(wait_child(child), 0);

        _cleanup_close_ int fd = socket_in(pid, AF_INET, SOCK_DGRAM);
        struct ifreq ifr = { .ifr_name = "lo" };
        CHECK(ioctl(fd, SIOCGIFFLAGS, &ifr) == 0);
        CHECK(ifr.ifr_flags & IFF_UP);
        /* Loopback traffic works inside. */
        _cleanup_close_ int l = listen_in(pid, "127.0.0.1", 7001);
        CHECK(l >= 0);
        CHECK_EQ_INT(connect_from(pid, "127.0.0.1", 7001, TIMEOUT_OK_MS), 0);
}

static void test_namespaces(void) {
        pid_t a, b, ext;
        int fd_a, fd_b;
        char peer[INET_ADDRSTRLEN];
        double t0, t1, t2;

        a = holders[0] = netns_new();
        b = holders[1] = netns_new();
        ext = holders[2] = netns_new();
        fd_a = netns_open(a);
        fd_b = netns_open(b);

        check_loopback(a);
        check_loopback(b);

        CHECK_EQ_INT(net_nat_setup(fd_a, NET_SLOT_MAX), -EINVAL);
        CHECK_EQ_INT(net_nat_setup(-1, SLOT_A), -EINVAL);

        /* A table of an older kiln is replaced, not extended. */
        CHECK(!nft_table_exists());
        CHECK(nft_ok("add table inet kiln\nadd chain inet kiln stale\n"));

        t0 = now_ms();
        CHECK_EQ_INT(net_nat_setup(fd_a, SLOT_A), 0);
        t1 = now_ms();
        CHECK_EQ_INT(net_nat_setup(fd_b, SLOT_B), 0);
        t2 = now_ms();
        printf("net_nat_setup: %.2f ms (first), %.2f ms (second)\n", t1 - t0, t2 - t1);
        CHECK(nft_ok("list chain inet kiln ruleset_v1"));
        CHECK(nft_ok("list chain inet kiln forward"));
        CHECK(!nft_ok("list chain inet kiln stale"));
        CHECK_EQ_INT(net_nat_setup(fd_b, SLOT_B + 1), -EEXIST); /* b has an eth0 already */
        CHECK(if_nametoindex("kv16382") == 0);

        check_addr(0, "kv16380", A_HOST, "255.255.255.252");
        check_addr(a, "eth0", A_SANDBOX, "255.255.255.252");
        check_addr(0, "kv16381", B_HOST, "255.255.255.252");
        check_addr(b, "eth0", B_SANDBOX, "255.255.255.252");
        check_default_route(a, "F1FF4064"); /* 100.64.255.241, little-endian hex */
        check_default_route(b, "F5FF4064");
        check_no_ipv6(a, "eth0");
        check_no_ipv6(0, "kv16380");
        _cleanup_free_ char *fwd = NULL;
        CHECK(read_full_file("/proc/sys/net/ipv4/ip_forward", 16, &fwd, NULL) == 0);
        CHECK(fwd[0] == '1');

        /* The outside world. */
        char ext_pid[16];
        snprintf(ext_pid, sizeof ext_pid, "%d", (int) ext);
        IP(0, "link", "add", EXT_HOST_IF, "type", "veth", "peer", "name", EXT_PEER_IF, "netns", ext_pid);
        ext_link_made = true;
        IP(0, "addr", "add", EXT_HOST "/30", "dev", EXT_HOST_IF);
        IP(0, "link", "set", EXT_HOST_IF, "up");
        IP(0, "route", "add", METADATA "/32", "via", EXT_ADDR);
        IP(ext, "link", "set", "lo", "up");
        IP(ext, "addr", "add", EXT_ADDR "/30", "dev", EXT_PEER_IF);
        IP(ext, "addr", "add", METADATA "/32", "dev", "lo");
        IP(ext, "link", "set", EXT_PEER_IF, "up");
        IP(ext, "route", "add", "default", "via", EXT_HOST);

        /* Outbound from a sandbox works, masqueraded behind the host. */
        _cleanup_close_ int ext_srv = listen_in(ext, EXT_ADDR, 8080);
        CHECK_EQ_INT(connect_from(a, EXT_ADDR, 8080, TIMEOUT_OK_MS), 0);
        CHECK_STREQ(accept_peer(ext_srv, peer), EXT_HOST);
        CHECK_EQ_INT(connect_from(b, EXT_ADDR, 8080, TIMEOUT_OK_MS), 0);
        CHECK_STREQ(accept_peer(ext_srv, peer), EXT_HOST);

        /* Every server below is reachable from somewhere else, so that a
         * failure from the sandbox means the sandbox is fenced off. */
        _cleanup_close_ int host_any = listen_in(0, "0.0.0.0", 8081);
        CHECK_EQ_INT(connect_from(ext, EXT_HOST, 8081, TIMEOUT_OK_MS), 0);
        CHECK(accept_peer(host_any, peer));
        _cleanup_close_ int host_lo = listen_in(0, "127.0.0.1", 8082);
        CHECK_EQ_INT(connect_from(0, "127.0.0.1", 8082, TIMEOUT_OK_MS), 0);
        CHECK(accept_peer(host_lo, peer));
        _cleanup_close_ int meta = listen_in(ext, METADATA, 80);
        CHECK_EQ_INT(connect_from(0, METADATA, 80, TIMEOUT_OK_MS), 0);
        CHECK(accept_peer(meta, peer));
        _cleanup_close_ int b_srv = listen_in(b, "0.0.0.0", 8083);
        CHECK_EQ_INT(connect_from(b, B_SANDBOX, 8083, TIMEOUT_OK_MS), 0);
        CHECK(accept_peer(b_srv, peer));

        printf("from sandbox A:\n");
        check_unreachable(a, "host, its end of the veth", A_HOST, 8081, host_any);
        check_unreachable(a, "host, its address towards ext", EXT_HOST, 8081, host_any);
        check_unreachable(a, "host, sandbox B's gateway", B_HOST, 8081, host_any);
        check_unreachable(a, "host, 127.0.0.1", "127.0.0.1", 8082, host_lo);
        check_unreachable(a, "sandbox B", B_SANDBOX, 8083, b_srv);
        check_unreachable(a, "metadata service", METADATA, 80, meta);
        /* Nothing from outside may open a connection into a sandbox. */
        _cleanup_close_ int a_srv = listen_in(a, "0.0.0.0", 8084);
        IP(ext, "route", "add", "100.64.0.0/16", "via", EXT_HOST);
        printf("into sandbox A:\n");
        check_unreachable(ext, "from ext", A_SANDBOX, 8084, a_srv);
        check_unreachable(b, "from sandbox B", A_SANDBOX, 8084, a_srv);
        check_unreachable(0, "from the host", A_SANDBOX, 8084, a_srv);
        CHECK_EQ_INT(connect_from(a, A_SANDBOX, 8084, TIMEOUT_OK_MS), 0);
        CHECK(accept_peer(a_srv, peer));

        /* Teardown removes both ends; the other sandbox keeps working. */
        CHECK_EQ_INT(net_nat_teardown(SLOT_B), 0);
        CHECK(if_nametoindex("kv16381") == 0);
        CHECK_EQ_INT(net_nat_teardown(SLOT_B), 0);
        CHECK_EQ_INT(connect_from(a, EXT_ADDR, 8080, TIMEOUT_OK_MS), 0);
        CHECK_STREQ(accept_peer(ext_srv, peer), EXT_HOST);

        /* A slot torn down can be used again at once. */
        t0 = now_ms();
        CHECK_EQ_INT(net_nat_setup(fd_b, SLOT_B), 0);
        t1 = now_ms();
        printf("net_nat_setup: %.2f ms (again, table present)\n", t1 - t0);
        /* Usable on return: the first SYN is not lost (a resend would take 1 s). */
        CHECK_EQ_INT(connect_from(b, EXT_ADDR, 8080, 900), 0);
        CHECK_STREQ(accept_peer(ext_srv, peer), EXT_HOST);

        /* A slot whose link is still there (its sandbox died, the kernel has
         * not freed the namespace yet) is taken over by the next sandbox. */
        pid_t c = holders[3] = netns_new();
        int fd_c = netns_open(c);
        CHECK_EQ_INT(net_nat_setup(fd_c, SLOT_B), 0);
        check_addr(c, "eth0", B_SANDBOX, "255.255.255.252");
        CHECK_EQ_INT(connect_from(c, EXT_ADDR, 8080, TIMEOUT_OK_MS), 0);
        CHECK_STREQ(accept_peer(ext_srv, peer), EXT_HOST);
        {
                _cleanup_close_ int fd = socket_in(b, AF_INET, SOCK_DGRAM);
                struct ifreq ifr = { .ifr_name = "eth0" };
                CHECK(ioctl(fd, SIOCGIFFLAGS, &ifr) < 0 && errno == ENODEV);
        }

        close(fd_a);
        close(fd_b);
        close(fd_c);

        /* The table stays while a sandbox link exists, whatever the caller
         * believes; it goes with the last one. */
        CHECK_EQ_INT(net_gc(true), 0);
        CHECK(nft_table_exists());
        CHECK_EQ_INT(net_gc(false), -EBUSY);
        CHECK(if_nametoindex("kv16380") > 0);
        CHECK(nft_table_exists());
        CHECK_EQ_INT(net_nat_teardown(SLOT_A), 0);
        CHECK_EQ_INT(net_gc(false), -EBUSY);
        CHECK_EQ_INT(net_nat_teardown(SLOT_B), 0);
        CHECK(if_nametoindex("kv16380") == 0);
        CHECK(if_nametoindex("kv16381") == 0);
        CHECK_EQ_INT(net_gc(false), 0);
        CHECK(!nft_table_exists());
        CHECK_EQ_INT(net_gc(false), 0);
}

/* Not async-signal-safe, but the test is only ever waiting in a syscall when
 * meson's timeout hits, and leaving links and namespaces behind is worse. */
static void on_sigterm(int sig) {
        exit(128 + sig);
}

int main(void) {
        static const char *const ips[] = { "/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip" };
        test_resolv_conf();

        if (geteuid() != 0)
                SKIP("network namespaces, veth and nftables need root (the resolv.conf part passed)");
        for (size_t i = 0; i < ELEMENTSOF(ips) && !ip_bin; i++)
                if (access(ips[i], X_OK) == 0)
                        ip_bin = ips[i];
        if (!ip_bin)
                SKIP("ip(8) from iproute2 is needed to build the fake outside world");
        /* The test's "host" is a network namespace of its own: the kv links,
         * the nftables table and ip_forward are all per namespace, so neither
         * the real host nor a kiln or test running next to us is touched. */
        if (unshare(CLONE_NEWNET) < 0)
                SKIP("cannot create a network namespace: %s", strerror(errno));
        CHECK_EQ_INT(net_loopback_up(), 0);

        main_pid = getpid();
        atexit(cleanup);
        /* A check that fails in the middle exits; SIGTERM from a test timeout
         * should clean up as well. */
        signal(SIGTERM, on_sigterm);
        test_namespaces();
        return 0;
}
