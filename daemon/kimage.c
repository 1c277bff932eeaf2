/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Checking a kernel image before it is loaded for a live update kexec
 * (kimage.h).  x86 bzImage only: the only format kexec_file_load(2) takes
 * on x86_64.
 *
 * What the kernel-patches series adds that a kernel needs to adopt
 * preserved devices is code, not Kconfig options: its LUO handlers are
 * built whenever LIVEUPDATE, IOMMUFD and GENERIC_PT are, and a pristine
 * kernel with the same config lacks them.  So the config check (the
 * options the series' code is built under) is completed by looking for
 * the series in the image itself: the compatible strings its handlers and
 * FLBs hand over with (kimage_series[]), which the next kernel must know to
 * adopt the VMs.  A pristine kernel has none of them and resets the IOMMU
 * at boot, with the preserved devices still doing DMA.
 */

#include <errno.h>
#include <lzma.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "kimage.h"
#include "util.h"

/* bzImage setup header (Documentation/arch/x86/boot.rst) */
#define BZ_SETUP_SECTS 0x1f1
#define BZ_HEADER 0x202		/* "HdrS" */
#define BZ_VERSION 0x206
#define BZ_KERNEL_VERSION 0x20e	/* pointer to the version string, - 0x200 */
#define BZ_PAYLOAD_OFFSET 0x248	/* protocol 2.08+ */
#define BZ_PAYLOAD_LENGTH 0x24c
#define BZ_MIN_LEN 0x250

/* What a kernel needs to adopt iommu-lud's VMs, with the series' strings. */
static const struct {
	const char *compatible;
	const char *what;
} kimage_series[] = {
	{ "pci-liveupdate-v1", "the PCI core's live update FLB" },
	{ "iommu-core-v1", "the IOMMU core's live update FLB" },
	{ "iommufd-v2", "iommufd's live update handler" },
	{ "vfio-pci-v3", "vfio-pci's live update handler" },
};

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static bool is_bzimage(const uint8_t *img, size_t len)
{
	return len >= BZ_MIN_LEN && memcmp(img + BZ_HEADER, "HdrS", 4) == 0;
}

int kimage_release(const uint8_t *img, size_t len, char ret[KIMAGE_RELEASE_MAX])
{
	size_t off, n = 0;

	if (!is_bzimage(img, len))
		return -EINVAL;
	off = (size_t)le16(img + BZ_KERNEL_VERSION) + 0x200;
	if (le16(img + BZ_KERNEL_VERSION) == 0 || off >= len)
		return -ENODATA;
	while (off + n < len && n < KIMAGE_RELEASE_MAX - 1 && img[off + n] > ' ' && img[off + n] < 0x7f)
		n++;
	if (n == 0)
		return -ENODATA;
	memcpy(ret, img + off, n);
	ret[n] = 0;
	return 0;
}

/* Append to a growing buffer, bounded by KIMAGE_VMLINUX_MAX. */
typedef struct Out {
	uint8_t *buf;
	size_t len, cap;
} Out;

static int out_reserve(Out *o, size_t more)
{
	uint8_t *n;
	size_t cap;

	if (o->len + more <= o->cap)
		return 0;
	if (o->len + more > KIMAGE_VMLINUX_MAX)
		return -EFBIG;
	cap = o->cap ? o->cap * 2 : 16u << 20;
	while (cap < o->len + more)
		cap *= 2;
	if (cap > KIMAGE_VMLINUX_MAX)
		cap = KIMAGE_VMLINUX_MAX;
	n = realloc(o->buf, cap);
	if (!n)
		return -ENOMEM;
	o->buf = n;
	o->cap = cap;
	return 0;
}

static int gunzip(const uint8_t *in, size_t len, Out *o)
{
	z_stream z = {};
	int zr, r = 0;

	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
		return -ENOMEM;
	z.next_in = (Bytef *)in;
	z.avail_in = len > UINT32_MAX ? UINT32_MAX : (uInt)len;
	do {
		r = out_reserve(o, 1u << 20);
		if (r < 0)
			break;
		z.next_out = o->buf + o->len;
		z.avail_out = (uInt)(o->cap - o->len);
		zr = inflate(&z, Z_NO_FLUSH);
		o->len = o->cap - z.avail_out;
		if (zr == Z_STREAM_END)
			break;
		if (zr != Z_OK && zr != Z_BUF_ERROR) {
			r = zr == Z_MEM_ERROR ? -ENOMEM : -EBADMSG;
			break;
		}
		if (zr == Z_BUF_ERROR && z.avail_in == 0) {
			r = -EBADMSG;	/* truncated */
			break;
		}
	} while (1);
	inflateEnd(&z);
	return r;
}

static int unxz(const uint8_t *in, size_t len, Out *o)
{
	lzma_stream s = LZMA_STREAM_INIT;
	lzma_ret lr;
	int r = 0;

	if (lzma_stream_decoder(&s, UINT64_MAX, 0) != LZMA_OK)
		return -ENOMEM;
	s.next_in = in;
	s.avail_in = len;
	do {
		r = out_reserve(o, 1u << 20);
		if (r < 0)
			break;
		s.next_out = o->buf + o->len;
		s.avail_out = o->cap - o->len;
		lr = lzma_code(&s, LZMA_FINISH);
		o->len = o->cap - s.avail_out;
		if (lr == LZMA_STREAM_END)
			break;
		if (lr != LZMA_OK) {
			r = lr == LZMA_MEM_ERROR ? -ENOMEM : -EBADMSG;
			break;
		}
	} while (1);
	lzma_end(&s);
	return r;
}

int kimage_decompress(const uint8_t *img, size_t len, uint8_t **ret, size_t *ret_len, char *err, size_t errlen)
{
	static const struct {
		const uint8_t magic[4];
		size_t n;
		const char *name;
	} others[] = {
		{ { 0x28, 0xb5, 0x2f, 0xfd }, 4, "zstd" },
		{ { 0x02, 0x21, 0x4c, 0x18 }, 4, "lz4" },
		{ { 0x89, 'L', 'Z', 'O' }, 4, "lzo" },
		{ { 'B', 'Z', 'h' }, 3, "bzip2" },
		{ { 0x5d, 0x00, 0x00 }, 3, "lzma" },
	};
	const uint8_t *p;
	size_t start, plen;
	Out o = {};
	int r;

	if (!is_bzimage(img, len)) {
		snprintf(err, errlen, "not an x86 bzImage (no \"HdrS\" setup header)");
		return -EINVAL;
	}
	if (le16(img + BZ_VERSION) < 0x208) {
		snprintf(err, errlen, "boot protocol %x.%02x is older than 2.08 (no payload fields)",
			 img[BZ_VERSION + 1], img[BZ_VERSION]);
		return -EINVAL;
	}
	start = ((size_t)(img[BZ_SETUP_SECTS] ?: 4) + 1) * 512 + le32(img + BZ_PAYLOAD_OFFSET);
	plen = le32(img + BZ_PAYLOAD_LENGTH);
	if (start >= len || plen < 4 || plen > len - start) {
		snprintf(err, errlen, "payload [%zu, +%zu) lies outside the %zu-byte image", start, plen, len);
		return -EINVAL;
	}
	p = img + start;
	if (p[0] == 0x1f && p[1] == 0x8b)
		r = gunzip(p, plen, &o);
	else if (plen >= 6 && memcmp(p, "\xfd" "7zXZ\0", 6) == 0)
		r = unxz(p, plen, &o);
	else {
		const char *name = "unknown";

		for (size_t i = 0; i < ELEMENTSOF(others); i++)
			if (memcmp(p, others[i].magic, others[i].n) == 0)
				name = others[i].name;
		snprintf(err, errlen, "its payload is compressed with %s; only gzip and xz can be read", name);
		return -EPROTONOSUPPORT;
	}
	if (r < 0) {
		free(o.buf);
		snprintf(err, errlen, "%s", r == -EFBIG ? "the decompressed kernel exceeds 512 MiB" :
					    r == -ENOMEM ? "out of memory decompressing it" :
					    "its compressed payload is corrupt or truncated");
		return r;
	}
	*ret = o.buf;
	*ret_len = o.len;
	return 0;
}

int kimage_ikconfig(const uint8_t *vmlinux, size_t len, char **ret)
{
	const uint8_t *st, *ed;
	Out o = {};
	int r;

	st = memmem(vmlinux, len, "IKCFG_ST", 8);
	if (!st)
		return -ENOENT;
	st += 8;
	ed = memmem(st, len - (size_t)(st - vmlinux), "IKCFG_ED", 8);
	if (!ed)
		return -ENOENT;
	r = gunzip(st, (size_t)(ed - st), &o);
	if (r >= 0)
		r = out_reserve(&o, 1);
	if (r < 0) {
		free(o.buf);
		return r;
	}
	o.buf[o.len] = 0;
	*ret = (char *)o.buf;
	return 0;
}

bool kimage_cmdline_param(const char *cmdline, const char *key, char *ret, size_t n)
{
	size_t klen = strlen(key);
	bool found = false;
	const char *p = cmdline;

	if (n)
		ret[0] = 0;
	while (p && *p) {
		const char *w, *e;
		bool quoted = false;

		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		if (!*p)
			break;
		w = p;
		for (e = w; *e && (quoted || (*e != ' ' && *e != '\t' && *e != '\n')); e++)
			if (*e == '"')
				quoted = !quoted;
		if (e - w == 2 && w[0] == '-' && w[1] == '-')
			break;	/* the rest is init's */
		if ((size_t)(e - w) >= klen && strncmp(w, key, klen) == 0 &&
		    (w + klen == e || w[klen] == '=')) {
			const char *v = w + klen == e ? e : w + klen + 1;
			size_t vl = (size_t)(e - v);

			if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
				v++;
				vl -= 2;
			}
			found = true;
			if (n) {
				vl = MIN(vl, n - 1);
				memcpy(ret, v, vl);
				ret[vl] = 0;
			}
		}
		p = e;
	}
	return found;
}

/* kstrtobool(): 1 true, 0 false, -1 neither */
static int parse_kbool(const char *s)
{
	switch (s[0]) {
	case 'y': case 'Y': case 't': case 'T': case '1': case 'e': case 'E':
		return 1;
	case 'n': case 'N': case 'f': case 'F': case '0': case 'd': case 'D':
		return 0;
	case 'o': case 'O':
		if (s[1] == 'n' || s[1] == 'N')
			return 1;
		if (s[1] == 'f' || s[1] == 'F')
			return 0;
		return -1;
	default:
		return -1;
	}
}

/* The value of CONFIG_<name> in a config text: 'y', 'm', or 0 if unset. */
static char config_value(const char *config, const char *name)
{
	char key[128];
	size_t kl = (size_t)snprintf(key, sizeof(key), "CONFIG_%s=", name);
	const char *p = config;

	while ((p = strstr(p, key))) {
		if (p == config || p[-1] == '\n')
			return p[kl] == 'y' || p[kl] == 'm' ? p[kl] : 0;
		p += kl;
	}
	return 0;
}

/* Append "; "-separated text to a problem buffer. */
static void problem_add(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem_add(char *buf, const char *fmt, ...)
{
	size_t l = strlen(buf);
	va_list ap;

	if (l && l + 2 < KIMAGE_PROBLEM_MAX) {
		memcpy(buf + l, "; ", 3);
		l += 2;
	}
	va_start(ap, fmt);
	vsnprintf(buf + l, KIMAGE_PROBLEM_MAX - l, fmt, ap);
	va_end(ap);
}

/* The options of a list missing from config, as one problem. */
static void require_options(char *problem, const char *config, const char *config_source,
			    const char *const *opts, size_t n, bool module_ok)
{
	char missing[256] = "";
	size_t l = 0;

	for (size_t i = 0; i < n; i++) {
		char v = config_value(config, opts[i]);

		if (v == 'y' || (v == 'm' && module_ok))
			continue;
		l += (size_t)snprintf(missing + l, l < sizeof(missing) ? sizeof(missing) - l : 0, "%sCONFIG_%s%s",
				      l ? ", " : "", opts[i], v == 'm' ? "=m (must be =y)" : "");
	}
	if (l)
		problem_add(problem, "its config (%s) lacks %s", config_source, missing);
}

void kimage_verdict(const char *config, const char *config_source, const uint8_t *vmlinux, size_t vmlinux_len,
		    const char *image_err, const char *cmdline, KernelVerdict *ret)
{
	static const char *const luo_opts[] = { "KEXEC_HANDOVER", "LIVEUPDATE", "LIVEUPDATE_MEMFD" };
	/* What the series' code is built under (its Makefiles and #ifs) */
	static const char *const dev_opts[] = { "PCI", "IOMMUFD", "GENERIC_PT", "INTEL_IOMMU", "VFIO_DEVICE_CDEV" };
	static const char *const dev_mod_opts[] = { "VFIO", "VFIO_PCI" };
	char v[128];

	memset(ret->luo_problem, 0, sizeof(ret->luo_problem));
	memset(ret->devices_problem, 0, sizeof(ret->devices_problem));
	cmdline = cmdline ?: "";

	/* LUO: the options, and both switches on its command line */
	if (!config)
		problem_add(ret->luo_problem, "no config to check (none next to the image or in /boot, "
			    "no embedded IKCONFIG; name one with --config)");
	else
		require_options(ret->luo_problem, config, config_source, luo_opts, ELEMENTSOF(luo_opts), false);
	if (!kimage_cmdline_param(cmdline, "liveupdate", v, sizeof(v)) || parse_kbool(v) != 1)
		problem_add(ret->luo_problem, "its command line lacks liveupdate=on");
	if (kimage_cmdline_param(cmdline, "kho", v, sizeof(v))) {
		if (parse_kbool(v) != 1)
			problem_add(ret->luo_problem, "its command line has kho=%s", v);
	} else if (!config || config_value(config, "KEXEC_HANDOVER_ENABLE_DEFAULT") != 'y')
		problem_add(ret->luo_problem, "its command line lacks kho=on");
	ret->luo = !ret->luo_problem[0];

	/* Devices: LUO, the options, the IOMMU on, the series in the image */
	if (!ret->luo)
		problem_add(ret->devices_problem, "it cannot adopt LUO sessions (%s)", ret->luo_problem);
	if (config) {
		require_options(ret->devices_problem, config, config_source, dev_opts, ELEMENTSOF(dev_opts), false);
		require_options(ret->devices_problem, config, config_source, dev_mod_opts, ELEMENTSOF(dev_mod_opts),
				true);
	}
	if (kimage_cmdline_param(cmdline, "intel_iommu", v, sizeof(v))) {
		bool on = false, off = false;

		for (char *s = v, *tok, *save = NULL; (tok = strtok_r(s, ",", &save)); s = NULL) {
			on |= streq_ptr(tok, "on");
			off |= streq_ptr(tok, "off");
		}
		if (off)
			problem_add(ret->devices_problem, "its command line has intel_iommu=off: it would switch "
				    "translation off under the devices");
		else if (!on && (!config || config_value(config, "INTEL_IOMMU_DEFAULT_ON") != 'y'))
			problem_add(ret->devices_problem, "its command line lacks intel_iommu=on");
	} else if (config && config_value(config, "INTEL_IOMMU_DEFAULT_ON") != 'y')
		problem_add(ret->devices_problem, "its command line lacks intel_iommu=on");
	if (!vmlinux)
		problem_add(ret->devices_problem, "its image cannot be read (%s), so whether it carries the "
			    "kernel-patches series is unknown", strempty(image_err));
	else
		for (size_t i = 0; i < ELEMENTSOF(kimage_series); i++)
			if (!memmem(vmlinux, vmlinux_len, kimage_series[i].compatible,
				    strlen(kimage_series[i].compatible) + 1)) {
				problem_add(ret->devices_problem, "its image lacks the kernel-patches series "
					    "(no \"%s\", %s)", kimage_series[i].compatible, kimage_series[i].what);
				break;
			}
	ret->devices = !ret->devices_problem[0];
}
