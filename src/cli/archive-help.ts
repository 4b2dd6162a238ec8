/** Usage and help of `soma-sync archive` (apart from src/cli/archive.ts, so that main.ts loads no store code for it). */
import { helpText } from '../config.ts'

export const ARCHIVE_USAGE = 'soma-sync archive <export | verify [dir|url] | ls [dir|url]> [options]'

export const ARCHIVE_DESCRIPTION = [
  'Archives of the whole history (issue 14): segment files of commits with their blocks and certifying votes,',
  'one index per epoch and a manifest, readable from a directory, an HTTP host or an S3-compatible bucket.',
  '  export           write every closed epoch of the store in <data-dir>/chain (stopped node) to --archive-dir',
  '                   (only what is not archived yet); then upload to --archive-upload-url if given',
  '  verify [source]  read every segment of the archive at source (default --archive-url, else --archive-dir),',
  '                   check sizes and sha256, verify every commit, block and transaction from genesis as',
  '                   commit sync does and execute them into a scratch store (removed); prints the state root.',
  '                   Genesis from --genesis-file, <data-dir>/genesis.pb or the store in --data-dir',
  '  ls [source]      the manifest: chain, epochs and segments with their sizes and sha256'
].join('\n')

export function archiveHelp (): string {
  return helpText('archive', ARCHIVE_USAGE, ARCHIVE_DESCRIPTION)
}

