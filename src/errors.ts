/**
 * Every error soma-sync raises is a named class; `PEER_PENALTIES` maps the ones a remote peer can cause
 * to the score penalty that peer receives (see PeerScores in src/sync/peer-scores.ts).
 */

export class SomaError extends Error {
  static readonly code: string = 'ERR_SOMA'
  readonly code: string
  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = new.target.name
    this.code = (new.target as typeof SomaError).code
  }
}

/** A message that does not decode, or violates the schema's constraints (sizes, lengths, ranges). */
export class MalformedMessageError extends SomaError { static override readonly code: string = 'ERR_MALFORMED_MESSAGE' }
/** A signature that does not verify, or a signer not in the committee. */
export class InvalidSignatureError extends SomaError { static override readonly code: string = 'ERR_INVALID_SIGNATURE' }
/** A commit whose certifying votes do not reach 2f+1 of the epoch's stake. */
export class InsufficientVotesError extends SomaError { static override readonly code: string = 'ERR_INSUFFICIENT_VOTES' }
/** A commit sequence with a gap, a wrong index, or a previous-digest that does not chain. */
export class BrokenChainError extends SomaError { static override readonly code: string = 'ERR_BROKEN_CHAIN' }
/** Blocks returned that differ from the refs asked for (missing, extra, or different digests). */
export class BlockMismatchError extends SomaError { static override readonly code: string = 'ERR_BLOCK_MISMATCH' }
/** A transaction that fails verification (bad signature, wrong chain id, malformed). */
export class InvalidTransactionError extends SomaError { static override readonly code: string = 'ERR_INVALID_TRANSACTION' }
/** A response larger than the protocol allows. */
export class OversizedResponseError extends SomaError { static override readonly code: string = 'ERR_OVERSIZED_RESPONSE' }
/** A length prefix that is not a varint of at most the bytes the protocol's size limit needs (src/net/framing.ts). */
export class MalformedFrameError extends MalformedMessageError { static override readonly code: string = 'ERR_MALFORMED_FRAME' }
/** A length prefix declaring a request beyond the protocol's size limit (a client reports such a response as OversizedResponseError, its cause). */
export class OversizedFrameError extends OversizedResponseError { static override readonly code: string = 'ERR_OVERSIZED_FRAME' }
/** A peer that belongs to another chain (different genesis digest). */
export class WrongChainError extends SomaError { static override readonly code: string = 'ERR_WRONG_CHAIN' }
/** A peer that did not answer in time. */
export class PeerTimeoutError extends SomaError { static override readonly code: string = 'ERR_PEER_TIMEOUT' }
/** A peer that answered with an error, or closed the stream early. */
export class PeerRequestFailedError extends SomaError { static override readonly code: string = 'ERR_PEER_REQUEST_FAILED' }
/** A peer sent data that contradicts what it claimed (e.g. commits it said it had, missing). */
export class ProtocolViolationError extends SomaError { static override readonly code: string = 'ERR_PROTOCOL_VIOLATION' }
/** Snapshot data that fails its attestation, filter hash, checksum or state root. */
export class InvalidSnapshotError extends SomaError { static override readonly code: string = 'ERR_INVALID_SNAPSHOT' }
/** A chunk whose hash is not in the filter or not the listed hash. */
export class InvalidChunkError extends SomaError { static override readonly code: string = 'ERR_INVALID_CHUNK' }
/** Too many requests (or bytes) from one peer: the server refused it; `retryAfterMs` is its hint (src/net/rate-limit.ts). */
export class RateLimitedError extends SomaError {
  static override readonly code: string = 'ERR_RATE_LIMITED'
  /** how long the server asked us to leave it alone */
  retryAfterMs = 1000
}

/** Local problems: never the peer's fault. */
export class ConfigError extends SomaError { static override readonly code: string = 'ERR_CONFIG' }
export class StoreError extends SomaError { static override readonly code: string = 'ERR_STORE' }
export class CorruptStoreError extends StoreError { static override readonly code: string = 'ERR_CORRUPT_STORE' }
export class ForeignStoreError extends StoreError { static override readonly code: string = 'ERR_FOREIGN_STORE' }
/** A data dir that cannot run as an archival node: history below some commit is missing (snapshot-synced or pruned). */
export class ArchivalStoreError extends StoreError { static override readonly code: string = 'ERR_ARCHIVAL_STORE' }
export class NoPeerError extends SomaError { static override readonly code: string = 'ERR_NO_PEER' }
export class AbortedError extends SomaError { static override readonly code: string = 'ERR_ABORTED' }
/** The executor or a store write failed (ENOSPC, EIO, …): the node is in its `failed` phase. */
export class FatalNodeError extends SomaError { static override readonly code: string = 'ERR_FATAL' }

/** Archives (src/archive/): an object of an archive (bucket or directory) that fails a check. */
export class InvalidArchiveError extends SomaError { static override readonly code: string = 'ERR_INVALID_ARCHIVE' }
/** An archive source (HTTP host, S3 bucket) that cannot be read: HTTP status, network error, timeout. */
export class ArchiveSourceError extends SomaError { static override readonly code: string = 'ERR_ARCHIVE_SOURCE' }
/** A P2P peer's commit digest that differs from the archive's (spot check). */
export class SpotCheckError extends SomaError { static override readonly code: string = 'ERR_SPOT_CHECK' }

/**
 * Peer-score penalty per error class. A peer whose score falls to PEER_BAN_SCORE is disconnected and
 * not asked again for `peerBanMs`. Lying (bad data) costs far more than being slow or unreachable.
 */
export const PEER_PENALTIES: ReadonlyArray<[abstract new (...args: any[]) => Error, number]> = [
  [WrongChainError, 100],
  [InvalidSignatureError, 100],
  [InsufficientVotesError, 100],
  [BrokenChainError, 100],
  [BlockMismatchError, 100],
  [InvalidTransactionError, 100],
  [InvalidSnapshotError, 100],
  [InvalidChunkError, 50],
  [ProtocolViolationError, 50],
  [MalformedFrameError, 50],
  [OversizedFrameError, 50],
  [MalformedMessageError, 50],
  [OversizedResponseError, 50],
  [PeerTimeoutError, 10],
  // a refusal with a retry hint is a busy server protecting itself: the client backs off for the hint
  // (src/net/rate-limit.ts); 1 only bans a server that refuses ~100 times more than it serves
  [RateLimitedError, 1],
  [PeerRequestFailedError, 5]
]

/** Score at or below which a peer is banned. Scores start at 0; penalties subtract. */
export const PEER_BAN_SCORE = -100

/** The penalty for an error caused by a peer; unknown errors (stream resets, etc.) cost 5. */
export function penaltyFor (err: unknown): number {
  for (const [cls, penalty] of PEER_PENALTIES) {
    if (err instanceof cls) return penalty
  }
  if (err instanceof ConfigError || err instanceof StoreError || err instanceof AbortedError || err instanceof FatalNodeError) return 0
  return 5
}
