/* A small printf for guests: %d %i %u %x %p %s %c %% with l/ll/z length and width/zero-pad. */
#include "ferry_guest.h"

struct out {
  char* buf;
  size_t size;
  size_t len;
};

static void put(struct out* o, char c) {
  if (o->len + 1 < o->size) o->buf[o->len] = c;
  o->len++;
}

static void put_num(struct out* o, uint64_t v, int base, int neg, int width, char pad) {
  char tmp[24];
  int n = 0;
  do {
    int d = (int)(v % (uint64_t)base);
    tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
    v /= (uint64_t)base;
  } while (v);
  if (neg) tmp[n++] = '-';
  while (width-- > n) put(o, pad);
  while (n) put(o, tmp[--n]);
}

int fg_vsnprintf(char* buf, size_t size, const char* fmt, va_list ap) {
  struct out o = {buf, size, 0};
  for (const char* p = fmt; *p; ++p) {
    if (*p != '%') {
      put(&o, *p);
      continue;
    }
    ++p;
    char pad = ' ';
    int width = 0, lng = 0;
    if (*p == '0') {
      pad = '0';
      ++p;
    }
    while (*p >= '0' && *p <= '9') width = width * 10 + (*p++ - '0');
    while (*p == 'l' || *p == 'z') {
      lng++;
      ++p;
    }
    switch (*p) {
      case 'd':
      case 'i': {
        int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
        put_num(&o, v < 0 ? (uint64_t)-v : (uint64_t)v, 10, v < 0, width, pad);
        break;
      }
      case 'u':
        put_num(&o, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, 0, width, pad);
        break;
      case 'x':
        put_num(&o, lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, 0, width, pad);
        break;
      case 'p':
        put(&o, '0');
        put(&o, 'x');
        put_num(&o, (uint64_t)va_arg(ap, void*), 16, 0, width, pad);
        break;
      case 's': {
        const char* s = va_arg(ap, const char*);
        if (!s) s = "(null)";
        while (*s) put(&o, *s++);
        break;
      }
      case 'c':
        put(&o, (char)va_arg(ap, int));
        break;
      case '%':
        put(&o, '%');
        break;
      default:
        put(&o, '?');
        if (!*p) --p;
        break;
    }
  }
  if (size) buf[o.len < size ? o.len : size - 1] = 0;
  return (int)o.len;
}

int fg_snprintf(char* buf, size_t size, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = fg_vsnprintf(buf, size, fmt, ap);
  va_end(ap);
  return n;
}

int fg_printf(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = fg_vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fg_console_write(buf, n < (int)sizeof buf ? (size_t)n : sizeof buf - 1);
  return n;
}
