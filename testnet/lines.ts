/** Calls `fn` with every non-empty, trimmed line read from stdin (the control pipe of a testnet child). */
export function onStdinLines (fn: (line: string) => void): void {
  let buf = ''
  process.stdin.setEncoding('utf8')
  process.stdin.on('data', (d: string) => {
    buf += d
    let i: number
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim()
      buf = buf.slice(i + 1)
      if (line !== '') fn(line)
    }
  })
}
