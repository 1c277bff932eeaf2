/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Whether a kernel image can adopt what iommu-lud hands over (kimage.c).
 *
 * The running kernel does not expose the command line or the config of a
 * kernel loaded for kexec, so the daemon checks the image itself, before it
 * loads it (StageKernel): the x86 bzImage's header (release), its
 * decompressed payload (the KHO compatible strings of the kernel-patches
 * series' handlers, and the embedded config if it has IKCONFIG), the config
 * (/boot/config-RELEASE next to the image, given explicitly, or embedded)
 * and the command line it will boot with.
 *
 * Pure functions on buffers: the daemon and iommu-luctl both use them, and
 * the unit test drives them with synthetic images.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KIMAGE_RELEASE_MAX 65
#define KIMAGE_PROBLEM_MAX 512
/* The largest decompressed kernel accepted (a distribution kernel is
 * 30-80 MiB). */
#define KIMAGE_VMLINUX_MAX (512u << 20)

/* The release of an x86 bzImage ("7.3.4-g58a2b848e542"), from the
 * kernel_version string its setup header points to.  -EINVAL: not a
 * bzImage (no "HdrS"), -ENODATA: no version string. */
int kimage_release(const uint8_t *img, size_t len, char ret[KIMAGE_RELEASE_MAX]);

/* Decompress the bzImage's payload (gzip or xz) into a malloc'd buffer.
 * -EINVAL not a bzImage, -EPROTONOSUPPORT another compression (err names
 * it), -EBADMSG corrupt, -EFBIG larger than KIMAGE_VMLINUX_MAX. */
int kimage_decompress(const uint8_t *img, size_t len, uint8_t **ret, size_t *ret_len, char *err, size_t errlen);

/* The config embedded by CONFIG_IKCONFIG (between "IKCFG_ST" and
 * "IKCFG_ED", gzip), as a malloc'd NUL-terminated string; -ENOENT if the
 * image has none. */
int kimage_ikconfig(const uint8_t *vmlinux, size_t len, char **ret);

/* What a checked kernel can adopt. */
typedef struct KernelVerdict {
	char release[KIMAGE_RELEASE_MAX];
	bool luo;		/* LUO sessions with memfds: KHO, LUO, memfd preservation, on its command line */
	bool devices;		/* iommufd and vfio-pci devices: the series, iommufd, VT-d, vfio cdev */
	char luo_problem[KIMAGE_PROBLEM_MAX];	/* why not luo, else "" */
	char devices_problem[KIMAGE_PROBLEM_MAX];	/* why not devices, else "" */
} KernelVerdict;

/* Judge a kernel from its config text (NULL: none found), its decompressed
 * image (NULL: could not be read; image_err says why) and the command line
 * it is loaded with.  config_source names where the config came from, for
 * the messages. */
void kimage_verdict(const char *config, const char *config_source, const uint8_t *vmlinux, size_t vmlinux_len,
		    const char *image_err, const char *cmdline, KernelVerdict *ret);

/* The value of a kernel command line parameter ("liveupdate=on" -> "on"),
 * the last occurrence, up to n bytes; false if absent (a bare "kho" is "").
 * Parameters after " -- " belong to init and are ignored. */
bool kimage_cmdline_param(const char *cmdline, const char *key, char *ret, size_t n);
