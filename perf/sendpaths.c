// How much CPU the sender spends per GiB on each way of putting page-cached file data on a TCP
// socket as BitTorrent piece messages (a 13-byte header before each 16 KiB block), with no
// engine around it: what docs/design.md ("Upload paths", session 19) cites for why ringseed
// sends from mappings and not with splice, vmsplice or sendfile on this kind of box.
//
//   gcc -O2 -pthread perf/sendpaths.c -o /tmp/sendpaths
//   /tmp/sendpaths FILE MODE GIB PORT [BLOCKS_PER_JOB=16]
//
// FILE is read whole into the page cache first (use a file of 1 GiB or more, so blocks come from
// memory, not the CPU's caches). MODE:
//   copy      pread each block into a buffer behind its header, one send per job (ringseed's
//             copy path, synchronous)
//   mmap      one sendmsg per job: iovecs at each header and at the block in a shared read-only
//             mapping of FILE (ringseed's mmap path, synchronous)
//   splice    per block, write the header into a pipe and splice the block from FILE into it;
//             then splice the pipe into the socket (zero copies of block data)
//   vmsplice  one vmsplice per job of the headers and the mapped blocks (zero copies), then
//             splice the pipe into the socket; the header page is replaced after each job
//             (MADV_DONTNEED), as the kernel may still hold it
//   sendfile  per block, send the header with MSG_MORE and sendfile the block
// A receiver thread on CPU 1 reads and discards; the sender runs on CPU 0 and reports its own
// thread's CPU time per GiB sent (CLOCK_THREAD_CPUTIME_ID: on loopback that includes the
// receiving side's TCP work, which the kernel runs in the sender's softirq). Loopback only
// (127.0.0.1). Run the modes interleaved, several rounds, and compare medians: a shared host
// moves these figures by 20 % and more from one run to the next.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BLK 16384
#define HDR 13
#define MAX_JOB 48 // 48 blocks: 240 pipe slots with their headers, under a 1 MiB pipe's 256

static long long total;
static int port;
static volatile int listening;

static void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  sched_setaffinity(0, sizeof s, &s);
}

static double now(clockid_t c) {
  struct timespec t;
  clock_gettime(c, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void *receiver(void *arg) {
  (void)arg;
  pin(1);
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
  if (bind(l, (void *)&sa, sizeof sa) || listen(l, 1)) die("listen");
  listening = 1;
  int c = accept(l, 0, 0);
  static char buf[1 << 20];
  for (long long got = 0; got < total;) {
    ssize_t n = read(c, buf, sizeof buf);
    if (n <= 0) break;
    got += n;
  }
  close(c);
  close(l);
  return 0;
}

// Sends all `n` iovecs of `v` with sendmsg, advancing past partial sends.
static void send_all(int s, struct iovec *v, int n) {
  while (n > 0) {
    struct msghdr m = {.msg_iov = v, .msg_iovlen = n};
    ssize_t r = sendmsg(s, &m, 0);
    if (r <= 0) die("sendmsg");
    while (r > 0 && n > 0) {
      if ((size_t)r >= v->iov_len) { r -= v->iov_len; v++; n--; }
      else { v->iov_base = (char *)v->iov_base + r; v->iov_len -= r; r = 0; }
    }
  }
}

static void drain_pipe(int p, int s, size_t len) {
  while (len) {
    ssize_t r = splice(p, 0, s, 0, len, SPLICE_F_MOVE | SPLICE_F_MORE);
    if (r <= 0) die("splice to socket");
    len -= r;
  }
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s FILE copy|mmap|splice|vmsplice|sendfile GIB PORT [BLOCKS_PER_JOB]\n", argv[0]);
    return 2;
  }
  const char *mode = argv[2];
  int fd = open(argv[1], O_RDONLY);
  if (fd < 0) die("open");
  off_t size = lseek(fd, 0, SEEK_END);
  long long nblk = size / BLK;
  int job = argc > 5 ? atoi(argv[5]) : 16;
  if (job < 1 || job > MAX_JOB || nblk < job) { fprintf(stderr, "1..%d blocks per job, file >= a job\n", MAX_JOB); return 2; }
  port = atoi(argv[4]);
  long long blocks = atoll(argv[3]) * (1LL << 30) / BLK;
  total = blocks * (BLK + HDR);

  char *map = mmap(0, size, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) die("mmap");
  for (off_t i = 0; i < size; i += 4096) (void)*(volatile char *)(map + i); // page cache + PTEs

  pthread_t t;
  pthread_create(&t, 0, receiver, 0);
  while (!listening) usleep(1000);
  pin(0);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
  if (connect(s, (void *)&sa, sizeof sa)) die("connect");
  int p[2];
  if (pipe(p)) die("pipe");
  fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
  char *buf = aligned_alloc(4096, (size_t)MAX_JOB * (BLK + HDR) + 4096);
  char *hpage = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  struct iovec iov[2 * MAX_JOB];

  double c0 = now(CLOCK_THREAD_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
  for (long long b = 0; b < blocks; b += job) {
    int n = blocks - b < job ? (int)(blocks - b) : job;
    long long first = b % (nblk - job + 1);
    if (!strcmp(mode, "copy")) {
      char *q = buf;
      for (int i = 0; i < n; i++, q += BLK) {
        memset(q, 7, HDR);
        q += HDR;
        if (pread(fd, q, BLK, (first + i) * BLK) != BLK) die("pread");
      }
      iov[0] = (struct iovec){buf, (size_t)(q - buf)};
      send_all(s, iov, 1);
    } else if (!strcmp(mode, "mmap")) {
      for (int i = 0; i < n; i++) {
        memset(buf + HDR * i, 7, HDR);
        iov[2 * i] = (struct iovec){buf + HDR * i, HDR};
        iov[2 * i + 1] = (struct iovec){map + (first + i) * BLK, BLK};
      }
      send_all(s, iov, 2 * n);
    } else if (!strcmp(mode, "splice")) {
      for (int i = 0; i < n; i++) {
        memset(buf, 7, HDR);
        if (write(p[1], buf, HDR) != HDR) die("write header");
        loff_t off = (first + i) * BLK;
        if (splice(fd, &off, p[1], 0, BLK, SPLICE_F_MOVE) != BLK) die("splice from file");
      }
      drain_pipe(p[0], s, (size_t)n * (BLK + HDR));
    } else if (!strcmp(mode, "vmsplice")) {
      for (int i = 0; i < n; i++) {
        memset(hpage + HDR * i, 7, HDR);
        iov[2 * i] = (struct iovec){hpage + HDR * i, HDR};
        iov[2 * i + 1] = (struct iovec){map + (first + i) * BLK, BLK};
      }
      struct iovec *v = iov;
      int left = 2 * n;
      while (left > 0) {
        ssize_t r = vmsplice(p[1], v, left, 0);
        if (r <= 0) die("vmsplice");
        while (r > 0 && left > 0) {
          if ((size_t)r >= v->iov_len) { r -= v->iov_len; v++; left--; }
          else { v->iov_base = (char *)v->iov_base + r; v->iov_len -= r; r = 0; }
        }
      }
      drain_pipe(p[0], s, (size_t)n * (BLK + HDR));
      madvise(hpage, 4096, MADV_DONTNEED);
    } else if (!strcmp(mode, "sendfile")) {
      for (int i = 0; i < n; i++) {
        memset(buf, 7, HDR);
        if (send(s, buf, HDR, MSG_MORE) != HDR) die("send header");
        off_t off = (first + i) * BLK;
        for (size_t left = BLK; left;) {
          ssize_t r = sendfile(s, fd, &off, left);
          if (r <= 0) die("sendfile");
          left -= r;
        }
      }
    } else {
      fprintf(stderr, "unknown mode %s\n", mode);
      return 2;
    }
  }
  double c1 = now(CLOCK_THREAD_CPUTIME_ID), w1 = now(CLOCK_MONOTONIC);
  shutdown(s, SHUT_WR);
  pthread_join(t, 0);
  double gib = (double)total / (1 << 30);
  printf("%-9s %2d blocks/job  %.3f GiB/s  %.3f sender CPU-s/GiB\n", mode, job, gib / (w1 - w0), (c1 - c0) / gib);
  return 0;
}
