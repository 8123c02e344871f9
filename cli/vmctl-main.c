/* vmctl: the PowerShell-like CLI for vmmsd. Everything is in the core library. */
#include <stdio.h>

#include "vmctl-verbs.h"

int main(int argc, char **argv)
{
        return vmctl_main(argc, argv, stdout, stderr);
}
