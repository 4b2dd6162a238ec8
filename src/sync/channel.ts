/**
 * A bounded async channel: `send` waits while `capacity` items are queued (backpressure), the
 * consumer iterates with `for await`. Closing ends the iteration once drained.
 */
export class BoundedChannel<T> implements AsyncIterable<T> {
  readonly capacity: number
  private readonly items: T[] = []
  private closed = false
  private readers: Array<(r: IteratorResult<T>) => void> = []
  private writers: Array<() => void> = []

  constructor (capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`channel capacity must be >= 1, got ${capacity}`)
    this.capacity = capacity
  }

  get size (): number { return this.items.length }
  get isClosed (): boolean { return this.closed }

  /** Resolves once the item is queued; waits while the channel is full. */
  async send (item: T, signal?: AbortSignal): Promise<void> {
    while (this.items.length >= this.capacity && !this.closed) {
      signal?.throwIfAborted()
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => { reject(signal!.reason) }
        signal?.addEventListener('abort', onAbort, { once: true })
        this.writers.push(() => { signal?.removeEventListener('abort', onAbort); resolve() })
      })
    }
    if (this.closed) throw new Error('channel closed')
    const reader = this.readers.shift()
    if (reader !== undefined) reader({ value: item, done: false })
    else this.items.push(item)
  }

  /** Queues without waiting; false when full or closed. */
  trySend (item: T): boolean {
    if (this.closed || this.items.length >= this.capacity) return false
    const reader = this.readers.shift()
    if (reader !== undefined) reader({ value: item, done: false })
    else this.items.push(item)
    return true
  }

  /**
   * Takes up to `max` items already queued, without waiting; stops after the first item for which
   * `stopAfter` is true.
   */
  takeReady (max: number, stopAfter?: (item: T) => boolean): T[] {
    const out: T[] = []
    while (out.length < max && this.items.length > 0) {
      const item = this.items.shift()!
      this.writers.shift()?.()
      out.push(item)
      if (stopAfter?.(item) === true) break
    }
    return out
  }

  close (): void {
    this.closed = true
    for (const r of this.readers) r({ value: undefined, done: true })
    this.readers = []
    for (const w of this.writers) w()
    this.writers = []
  }

  async next (): Promise<IteratorResult<T>> {
    if (this.items.length > 0) {
      const value = this.items.shift()!
      this.writers.shift()?.()
      return { value, done: false }
    }
    if (this.closed) return { value: undefined, done: true }
    return await new Promise(resolve => this.readers.push(resolve))
  }

  [Symbol.asyncIterator] (): AsyncIterator<T> {
    return { next: async () => await this.next() }
  }
}
