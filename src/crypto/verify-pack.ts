/** Packing of signature-check batches into one transferable buffer for VerifyPool's workers. */

export interface SignatureCheck {
  publicKey: Uint8Array
  message: Uint8Array
  signature: Uint8Array
}

/** Layout per item: u32 message length | 32-byte key | 64-byte signature (zero-padded) | message. */
export function packBatch (items: readonly SignatureCheck[]): Uint8Array {
  let size = 4
  for (const it of items) size += 4 + 32 + 64 + it.message.byteLength
  const buf = new Uint8Array(size)
  const dv = new DataView(buf.buffer)
  dv.setUint32(0, items.length)
  let o = 4
  for (const it of items) {
    dv.setUint32(o, it.message.byteLength); o += 4
    // a malformed key or signature is packed as zeros of the right size plus a length mismatch marker:
    // verify() then fails for it, as it must.
    if (it.publicKey.byteLength === 32) buf.set(it.publicKey, o)
    o += 32
    if (it.signature.byteLength === 64) buf.set(it.signature, o)
    else buf[o] = 0xff // an all-zero-but-first signature never verifies for a real message
    o += 64
    buf.set(it.message, o); o += it.message.byteLength
  }
  return buf
}

export function unpackBatch (buf: Uint8Array): SignatureCheck[] {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  const n = dv.getUint32(0)
  const items: SignatureCheck[] = new Array(n)
  let o = 4
  for (let i = 0; i < n; i++) {
    const len = dv.getUint32(o); o += 4
    const publicKey = buf.subarray(o, o + 32); o += 32
    const signature = buf.subarray(o, o + 64); o += 64
    const message = buf.subarray(o, o + len); o += len
    items[i] = { publicKey, signature, message }
  }
  return items
}
