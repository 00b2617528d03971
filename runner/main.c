/* main.c: the sluice binary; everything else lives in the library the tests link too. */
#include "sluice/cli.h"

int main(int argc, char **argv)
{
    return sl_cli_main(argc, argv);
}
