/**
 * Uploads an archive directory to an S3-compatible bucket (`s3://bucket/prefix`), resumably and
 * without ever overwriting a finished object: each epoch index and segment is checked with HeadObject
 * first; one already there with the same size and ETag (the MD5 of a single-part object) is skipped, one
 * there with other bytes is an error (never replaced); missing ones are put whole (S3 objects appear
 * atomically, so an upload cut off leaves nothing half-written). The manifest, the one mutable object,
 * goes last, once everything it lists is in the bucket.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { ArchiveSourceError, InvalidArchiveError } from '../errors.ts'
import type { Logger } from '../utils/logger.ts'
import { MANIFEST_NAME, parseManifest } from './format.ts'
import { parseS3Url, s3Client, type S3Settings } from './source.ts'

export interface UploadResult { uploaded: number, skipped: number, bytes: number }

export async function uploadArchive (dir: string, url: string, s3: S3Settings, log: Logger, signal: AbortSignal = AbortSignal.timeout(3_600_000)): Promise<UploadResult> {
  const { bucket, prefix } = parseS3Url(url)
  const { client, sdk } = await s3Client(s3)
  const key = (name: string): string => prefix === '' ? name : `${prefix}/${name}`
  const where = (name: string): string => `s3://${bucket}/${key(name)}`
  const manifestBytes = readFileSync(path.join(dir, MANIFEST_NAME))
  const manifest = parseManifest(manifestBytes, path.join(dir, MANIFEST_NAME))
  const result: UploadResult = { uploaded: 0, skipped: 0, bytes: 0 }
  const objects = [...manifest.epochs.map(e => ({ name: e.name, size: e.size })), ...manifest.segments.map(s => ({ name: s.name, size: s.size }))]
  try {
    for (const o of objects) {
      signal.throwIfAborted()
      const body = readFileSync(path.join(dir, o.name))
      if (body.byteLength !== o.size) throw new InvalidArchiveError(`${path.join(dir, o.name)} is ${body.byteLength} bytes, the manifest lists ${o.size}`)
      const md5 = createHash('md5').update(body).digest('hex')
      let head: any
      try {
        head = await client.send(new sdk.HeadObjectCommand({ Bucket: bucket, Key: key(o.name) }), { abortSignal: signal })
      } catch (err: any) {
        const status = err?.$metadata?.httpStatusCode
        if (status !== 404 && err?.name !== 'NotFound' && err?.name !== 'NoSuchKey') throw new ArchiveSourceError(`${where(o.name)}: HEAD failed: ${status !== undefined ? `HTTP ${status} ` : ''}${err?.name ?? err?.message}`, { cause: err })
      }
      if (head !== undefined) {
        const etag = String(head.ETag ?? '').replace(/"/g, '')
        const sameSize = head.ContentLength === o.size
        // a multipart ETag (with a dash) is not an MD5: the size decides then
        if (sameSize && (etag === md5 || etag.includes('-'))) {
          result.skipped++
          continue
        }
        throw new InvalidArchiveError(`${where(o.name)} exists with other bytes (${head.ContentLength} bytes, ETag ${etag}); an archive object is never overwritten: remove it or upload to another prefix`)
      }
      try {
        await client.send(new sdk.PutObjectCommand({ Bucket: bucket, Key: key(o.name), Body: body, ContentLength: body.byteLength, ContentType: o.name.endsWith('.json') ? 'application/json' : 'application/octet-stream' }), { abortSignal: signal })
      } catch (err: any) {
        throw new ArchiveSourceError(`${where(o.name)}: PUT failed: ${err?.$metadata?.httpStatusCode !== undefined ? `HTTP ${err.$metadata.httpStatusCode} ` : ''}${err?.name ?? err?.message}`, { cause: err })
      }
      result.uploaded++
      result.bytes += body.byteLength
      log.debug('uploaded %s (%d bytes)', where(o.name), body.byteLength)
    }
    try {
      await client.send(new sdk.PutObjectCommand({ Bucket: bucket, Key: key(MANIFEST_NAME), Body: manifestBytes, ContentLength: manifestBytes.byteLength, ContentType: 'application/json', CacheControl: 'no-cache' }), { abortSignal: signal })
    } catch (err: any) {
      throw new ArchiveSourceError(`${where(MANIFEST_NAME)}: PUT failed: ${err?.name ?? err?.message}`, { cause: err })
    }
    result.uploaded++
    result.bytes += manifestBytes.byteLength
  } finally {
    client.destroy()
  }
  log.info('archive uploaded to s3://%s/%s: %d objects (%d bytes) put, %d already there; commits 1..%d', bucket, prefix, result.uploaded, result.bytes, result.skipped, manifest.highestCommit)
  return result
}
