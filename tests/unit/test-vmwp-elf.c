/* The guest ELF loader loads a well-formed kernel and refuses a malformed one with a
 * reason, writing nothing into guest RAM. */
#include <elf.h>
#include <errno.h>
#include <glib.h>
#include <stdbool.h>
#include <string.h>

#include "vmwp-elf.h"

#define RAM_BYTES (4u << 20)
#define MIN_GPA 0x100000u
#define LOAD_GPA 0x100000u
#define CODE_BYTES 64u
#define BSS_BYTES 4096u

typedef struct Image {
        Elf64_Ehdr eh;
        Elf64_Phdr ph[2];
        uint8_t code[CODE_BYTES];
} Image;

static void image_init(Image *img)
{
        memset(img, 0, sizeof(*img));
        memcpy(img->eh.e_ident, ELFMAG, SELFMAG);
        img->eh.e_ident[EI_CLASS] = ELFCLASS64;
        img->eh.e_ident[EI_DATA] = ELFDATA2LSB;
        img->eh.e_ident[EI_VERSION] = EV_CURRENT;
        img->eh.e_type = ET_EXEC;
        img->eh.e_machine = EM_X86_64;
        img->eh.e_version = EV_CURRENT;
        img->eh.e_entry = LOAD_GPA + 8;
        img->eh.e_phoff = offsetof(Image, ph);
        img->eh.e_ehsize = sizeof(Elf64_Ehdr);
        img->eh.e_phentsize = sizeof(Elf64_Phdr);
        img->eh.e_phnum = 2;
        img->ph[0] = (Elf64_Phdr){
                .p_type = PT_LOAD,
                .p_flags = PF_R | PF_X,
                .p_offset = offsetof(Image, code),
                .p_vaddr = LOAD_GPA,
                .p_paddr = LOAD_GPA,
                .p_filesz = CODE_BYTES,
                .p_memsz = CODE_BYTES + BSS_BYTES,
        };
        img->ph[1] = (Elf64_Phdr){.p_type = PT_NOTE};
        memset(img->code, 0x90, sizeof(img->code));
}

typedef void (*ImageMutation)(Image *img, size_t *size);

static void bad_magic(Image *img, size_t *size)
{
        (void)size;
        img->eh.e_ident[1] = 'X';
}
static void class_32(Image *img, size_t *size)
{
        (void)size;
        img->eh.e_ident[EI_CLASS] = ELFCLASS32;
}
static void big_endian(Image *img, size_t *size)
{
        (void)size;
        img->eh.e_ident[EI_DATA] = ELFDATA2MSB;
}
static void arm64(Image *img, size_t *size)
{
        (void)size;
        img->eh.e_machine = EM_AARCH64;
}
static void shared_object(Image *img, size_t *size)
{
        (void)size;
        img->eh.e_type = ET_DYN;
}
static void truncated_header(Image *img, size_t *size)
{
        (void)img;
        *size = 20;
}
static void phdrs_past_end(Image *img, size_t *size)
{
        (void)size;
        img->eh.e_phoff = sizeof(Image) - 8;
}
static void phdr_count_huge(Image *img, size_t *size)
{
        (void)size;
        img->eh.e_phnum = 60000;
}
static void phentsize_wrong(Image *img, size_t *size)
{
        (void)size;
        img->eh.e_phentsize = 32;
}
static void segment_data_past_end(Image *img, size_t *size)
{
        (void)size;
        img->ph[0].p_filesz = 1u << 20;
        img->ph[0].p_memsz = 1u << 20;
}
static void segment_offset_wraps(Image *img, size_t *size)
{
        (void)size;
        img->ph[0].p_offset = UINT64_MAX - 8;
}
static void filesz_exceeds_memsz(Image *img, size_t *size)
{
        (void)size;
        img->ph[0].p_memsz = 8;
}
static void segment_past_ram(Image *img, size_t *size)
{
        (void)size;
        img->ph[0].p_paddr = img->ph[0].p_vaddr = RAM_BYTES - 16;
}
static void segment_memsz_wraps(Image *img, size_t *size)
{
        (void)size;
        img->ph[0].p_memsz = UINT64_MAX - 0x1000;
}
static void segment_below_kernel_base(Image *img, size_t *size)
{
        (void)size;
        img->ph[0].p_paddr = img->ph[0].p_vaddr = 0x1000;
        img->eh.e_entry = 0x1000;
}
static void virtual_differs_from_physical(Image *img, size_t *size)
{
        (void)size;
        img->ph[0].p_vaddr = 0xffffffff80000000ull;
}
static void entry_outside_segments(Image *img, size_t *size)
{
        (void)size;
        img->eh.e_entry = 0x300000;
}
static void entry_in_data_segment(Image *img, size_t *size)
{
        (void)size;
        img->ph[0].p_flags = PF_R | PF_W;
}
static void no_load_segment(Image *img, size_t *size)
{
        (void)size;
        img->ph[0].p_type = PT_NOTE;
}

typedef struct ElfCase {
        const char *name;
        ImageMutation mutate;
        int expect;
        const char *reason; /* a substring of the error */
} ElfCase;

static const ElfCase elf_cases[] = {
        {"refuses_bad_magic", bad_magic, -ENOEXEC, "not an ELF file"},
        {"refuses_32_bit", class_32, -ENOEXEC, "64-bit"},
        {"refuses_big_endian", big_endian, -ENOEXEC, "little-endian"},
        {"refuses_other_machine", arm64, -ENOEXEC, "not x86-64"},
        {"refuses_shared_object", shared_object, -ENOEXEC, "not an executable"},
        {"refuses_truncated_header", truncated_header, -ENOEXEC, "not an ELF file"},
        {"refuses_program_headers_past_end", phdrs_past_end, -ENOEXEC, "past the end of the file"},
        {"refuses_huge_program_header_count", phdr_count_huge, -ENOEXEC, "malformed"},
        {"refuses_wrong_program_header_size", phentsize_wrong, -ENOEXEC, "malformed"},
        {"refuses_segment_data_past_end", segment_data_past_end, -ENOEXEC, "past the end of the file"},
        {"refuses_segment_offset_that_wraps", segment_offset_wraps, -ENOEXEC, "past the end of the file"},
        {"refuses_file_size_over_memory_size", filesz_exceeds_memsz, -ENOEXEC,
         "file size exceeds memory size"},
        {"refuses_segment_past_ram", segment_past_ram, -E2BIG, "does not fit guest RAM"},
        {"refuses_segment_size_that_wraps", segment_memsz_wraps, -E2BIG, "does not fit guest RAM"},
        {"refuses_segment_below_kernel_base", segment_below_kernel_base, -E2BIG, "does not fit guest RAM"},
        {"refuses_virtual_address_not_physical", virtual_differs_from_physical, -ENOEXEC, "paging off"},
        {"refuses_entry_outside_segments", entry_outside_segments, -ENOEXEC, "entry point"},
        {"refuses_entry_in_non_executable_segment", entry_in_data_segment, -ENOEXEC, "entry point"},
        {"refuses_image_without_load_segment", no_load_segment, -ENOEXEC, "no loadable segment"},
};

static bool all_zero(const uint8_t *p, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

static void test_elf_case(gconstpointer data)
{
        const ElfCase *tc = data;
        g_autofree uint8_t *ram = g_malloc0(RAM_BYTES);
        g_autofree char *error = NULL;
        uint64_t entry = 0xdead;
        size_t size = sizeof(Image);
        Image img;
        int r;

        image_init(&img);
        tc->mutate(&img, &size);
        r = vmwp_elf_load((const uint8_t *)&img, size, ram, RAM_BYTES, MIN_GPA, &entry, &error);
        g_assert_cmpint(r, ==, tc->expect);
        g_assert_nonnull(error);
        g_assert_nonnull(strstr(error, tc->reason));
        g_assert_cmpuint(entry, ==, 0xdead);
        g_assert_true(all_zero(ram, RAM_BYTES));
}

static void test_loads_segments_and_zeroes_bss(void)
{
        g_autofree uint8_t *ram = g_malloc(RAM_BYTES);
        g_autofree char *error = NULL;
        uint64_t entry = 0;
        Image img;

        memset(ram, 0xaa, RAM_BYTES);
        image_init(&img);
        g_assert_cmpint(
                vmwp_elf_load((const uint8_t *)&img, sizeof(img), ram, RAM_BYTES, MIN_GPA, &entry, &error),
                ==, 0);
        g_assert_null(error);
        g_assert_cmpuint(entry, ==, LOAD_GPA + 8);
        g_assert_cmpmem(ram + LOAD_GPA, CODE_BYTES, img.code, CODE_BYTES);
        g_assert_true(all_zero(ram + LOAD_GPA + CODE_BYTES, BSS_BYTES));
        g_assert_cmpuint(ram[LOAD_GPA + CODE_BYTES + BSS_BYTES], ==, 0xaa);
}

static void test_loads_the_real_guest_kernel(void)
{
        const char *path = g_getenv("VMMS_GUEST");
        g_autofree uint8_t *ram = g_malloc0(64u << 20);
        g_autofree char *error = NULL, *contents = NULL;
        gsize len;
        uint64_t entry = 0;

        if (!path) {
                g_test_skip("VMMS_GUEST is not set");
                return;
        }
        g_assert_true(g_file_get_contents(path, &contents, &len, NULL));
        g_assert_cmpint(
                vmwp_elf_load((const uint8_t *)contents, len, ram, 64u << 20, MIN_GPA, &entry, &error), ==,
                0);
        g_assert_cmpuint(entry, >=, MIN_GPA);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/vmwp-elf/loads_segments_and_zeroes_bss", test_loads_segments_and_zeroes_bss);
        g_test_add_func("/vmwp-elf/loads_the_real_guest_kernel", test_loads_the_real_guest_kernel);
        for (size_t i = 0; i < G_N_ELEMENTS(elf_cases); i++) {
                g_autofree char *path = g_strdup_printf("/vmwp-elf/%s", elf_cases[i].name);

                g_test_add_data_func(path, &elf_cases[i], test_elf_case);
        }
        return g_test_run();
}
