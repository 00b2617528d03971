/* cli_internal.h: what cli.c takes from cli_help.c. */
#ifndef SLUICE_CLI_INTERNAL_H
#define SLUICE_CLI_INTERNAL_H

/* `sluice --help`: the options, the commands, the exit codes. */
extern const char sl_cli_usage_text[];

/* cmd, or the command its alembic name stands for (upgrade: up, downgrade:
 * down, current: status). */
const char *sl_cli_canonical_command(const char *cmd);

/* `sluice COMMAND --help` on stdout: SL_EXIT_OK, or SL_EXIT_USAGE for a
 * command there is none of. */
int sl_cli_print_command_help(const char *cmd);

#endif
