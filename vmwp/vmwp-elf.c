/* ELF64 loader for the guest kernel. The image is a file the operator may have named
 * wrongly or a truncated build: every field is checked before it is used. */
#include <elf.h>
#include <errno.h>
#include <glib.h>
#include <stdbool.h>
#include <string.h>

#include "vmwp-elf.h"

static int fail(char **ret_error, int error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int fail(char **ret_error, int error, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        *ret_error = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        return error;
}

static int check_header(const Elf64_Ehdr *eh, size_t image_size, char **ret_error)
{
        if (image_size < sizeof(Elf64_Ehdr) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
                return fail(ret_error, -ENOEXEC, "not an ELF file");
        if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB)
                return fail(ret_error, -ENOEXEC, "not a 64-bit little-endian ELF file");
        if (eh->e_machine != EM_X86_64)
                return fail(ret_error, -ENOEXEC, "ELF machine %u is not x86-64", eh->e_machine);
        if (eh->e_type != ET_EXEC)
                return fail(ret_error, -ENOEXEC, "ELF type %u is not an executable (ET_EXEC)", eh->e_type);
        if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 || eh->e_phnum > 64)
                return fail(ret_error, -ENOEXEC, "ELF program headers are malformed (%u entries of %u bytes)",
                            eh->e_phnum, eh->e_phentsize);
        if (eh->e_phoff > image_size || (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > image_size - eh->e_phoff)
                return fail(ret_error, -ENOEXEC, "ELF program headers lie past the end of the file");
        return 0;
}

static int check_segment(const Elf64_Phdr *ph, unsigned index, size_t image_size, uint64_t ram_bytes,
                         uint64_t min_gpa, char **ret_error)
{
        if (ph->p_vaddr != ph->p_paddr)
                return fail(ret_error, -ENOEXEC,
                            "segment %u: virtual and physical addresses differ (guests run with paging off)",
                            index);
        if (ph->p_filesz > ph->p_memsz)
                return fail(ret_error, -ENOEXEC, "segment %u: file size exceeds memory size", index);
        if (ph->p_offset > image_size || ph->p_filesz > image_size - ph->p_offset)
                return fail(ret_error, -ENOEXEC, "segment %u: its data lies past the end of the file", index);
        if (ph->p_paddr < min_gpa || ph->p_paddr > ram_bytes || ph->p_memsz > ram_bytes - ph->p_paddr)
                return fail(ret_error, -E2BIG,
                            "segment %u: [0x%" G_GINT64_MODIFIER "x, +0x%" G_GINT64_MODIFIER
                            "x) does not fit guest RAM [0x%" G_GINT64_MODIFIER "x, 0x%" G_GINT64_MODIFIER
                            "x)",
                            index, (uint64_t)ph->p_paddr, (uint64_t)ph->p_memsz, min_gpa, ram_bytes);
        return 0;
}

int vmwp_elf_load(const uint8_t *image, size_t image_size, uint8_t *ram, uint64_t ram_bytes, uint64_t min_gpa,
                  uint64_t *ret_entry, char **ret_error)
{
        Elf64_Ehdr eh;
        bool entry_ok = false;
        unsigned loaded = 0;
        int r;

        if (image_size >= sizeof(eh))
                memcpy(&eh, image, sizeof(eh));
        else
                memset(&eh, 0, sizeof(eh));
        r = check_header(&eh, image_size, ret_error);
        if (r < 0)
                return r;
        /* Check every segment before copying any, so a bad image writes nothing. */
        for (unsigned i = 0; i < eh.e_phnum; i++) {
                Elf64_Phdr ph;

                memcpy(&ph, image + eh.e_phoff + i * sizeof(ph), sizeof(ph));
                if (ph.p_type != PT_LOAD)
                        continue;
                r = check_segment(&ph, i, image_size, ram_bytes, min_gpa, ret_error);
                if (r < 0)
                        return r;
                if ((ph.p_flags & PF_X) && eh.e_entry >= ph.p_paddr && eh.e_entry - ph.p_paddr < ph.p_memsz)
                        entry_ok = true;
                loaded++;
        }
        if (loaded == 0)
                return fail(ret_error, -ENOEXEC, "ELF file has no loadable segment");
        if (!entry_ok)
                return fail(ret_error, -ENOEXEC,
                            "entry point 0x%" G_GINT64_MODIFIER "x is not inside an executable segment",
                            (uint64_t)eh.e_entry);
        for (unsigned i = 0; i < eh.e_phnum; i++) {
                Elf64_Phdr ph;

                memcpy(&ph, image + eh.e_phoff + i * sizeof(ph), sizeof(ph));
                if (ph.p_type != PT_LOAD)
                        continue;
                memcpy(ram + ph.p_paddr, image + ph.p_offset, ph.p_filesz);
                memset(ram + ph.p_paddr + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
        }
        *ret_entry = eh.e_entry;
        return 0;
}
