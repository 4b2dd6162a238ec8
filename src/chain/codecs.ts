import { codec } from './proto.ts'
import type * as T from './types.ts'

export const Codecs = {
  Authority: codec<T.Authority>('soma.Authority'),
  Committee: codec<T.Committee>('soma.Committee'),
  Genesis: codec<T.Genesis>('soma.Genesis'),
  Transaction: codec<T.Transaction>('soma.Transaction'),
  SignedTransaction: codec<T.SignedTransaction>('soma.SignedTransaction'),
  BlockRef: codec<T.BlockRef>('soma.BlockRef'),
  Block: codec<T.Block>('soma.Block'),
  SignedBlock: codec<T.SignedBlock>('soma.SignedBlock'),
  Commit: codec<T.Commit>('soma.Commit'),
  CommittedSubDag: codec<T.CommittedSubDagMessage>('soma.CommittedSubDag'),
  AccountState: codec<T.AccountState>('soma.AccountState'),
  Embedding: codec<T.Embedding>('soma.Embedding'),
  TransactionEffects: codec<T.TransactionEffects>('soma.TransactionEffects')
}
