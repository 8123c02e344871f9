/* vmctl: the PowerShell-like CLI for vmmsd. Everything is in the core library. */
#include <stdio.h>
#include <string.h>

#include "vmctl-complete.h"
#include "vmctl-verbs.h"

int main(int argc, char **argv)
{
        /* Hidden: the grammar for shell completion, from the parser's own tables. */
        if (argc == 2 && strcmp(argv[1], "--complete") == 0)
                return vmctl_complete_print(stdout) == 0 ? 0 : 1;
        return vmctl_main(argc, argv, stdout, stderr);
}
