/* What a UDP packet costs to send on loopback, by how it is sent: one `sendmsg` a packet to an
 * unconnected socket (what quinn's endpoint and a bots' flock do), one `sendmmsg` for 16, or
 * `send` on a connected socket. The kernel delivers a loopback packet into the receiving
 * socket in the sender's call, so this is the whole kernel path of a packet but the receive
 * call (BENCHMARKS.md, "a session's rare branches polled when woken").
 *
 *   gcc -O2 -o /tmp/udp_send_cost benches/udp_send_cost.c && /tmp/udp_send_cost
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

enum { BATCH = 16, ROUNDS = 20000, BYTES = 80 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(0x7f000001);
    int rx = socket(AF_INET, SOCK_DGRAM, 0);
    if (rx < 0 || bind(rx, (void *)&to, sizeof to) != 0) return perror("rx"), 1;
    socklen_t len = sizeof to;
    getsockname(rx, (void *)&to, &len);
    int tx = socket(AF_INET, SOCK_DGRAM, 0);
    if (tx < 0) return perror("tx"), 1;
    char buf[BYTES], sink[2048];
    memset(buf, 1, sizeof buf);
    const char *names[] = {"sendmsg, unconnected", "sendmmsg of 16, unconnected", "send, connected"};
    for (int mode = 0; mode < 3; mode++) {
        if (mode == 2 && connect(tx, (void *)&to, sizeof to) != 0) return perror("connect"), 1;
        for (int rep = 0; rep < 3; rep++) {
            double spent = 0;
            for (int r = 0; r < ROUNDS; r++) {
                struct iovec io[BATCH];
                struct mmsghdr mm[BATCH];
                memset(mm, 0, sizeof mm);
                for (int i = 0; i < BATCH; i++) {
                    io[i].iov_base = buf;
                    io[i].iov_len = sizeof buf;
                    mm[i].msg_hdr.msg_name = &to;
                    mm[i].msg_hdr.msg_namelen = sizeof to;
                    mm[i].msg_hdr.msg_iov = &io[i];
                    mm[i].msg_hdr.msg_iovlen = 1;
                }
                double t0 = now();
                if (mode == 0)
                    for (int i = 0; i < BATCH; i++) sendmsg(tx, &mm[i].msg_hdr, 0);
                else if (mode == 1)
                    sendmmsg(tx, mm, BATCH, 0);
                else
                    for (int i = 0; i < BATCH; i++) send(tx, buf, sizeof buf, 0);
                spent += now() - t0;
                for (int i = 0; i < BATCH; i++) recv(rx, sink, sizeof sink, MSG_DONTWAIT);
            }
            printf("%-28s %.2f us a packet\n", names[mode], spent / (ROUNDS * BATCH) * 1e6);
        }
    }
    return 0;
}
