// The tokenizers the command line offers, for a user's text: GPT-2's BPE (npm's gpt-tokenizer, r50k_base:
// GPT-2's own encoding) and bytes. Kept out of core/ so that the lab's page does not bundle the BPE tables.

import { decode as decodeBpe, encode as encodeBpe } from "gpt-tokenizer/encoding/r50k_base";
import { BYTE_VOCAB_SIZE, type Corpus, decodeBytes, encodeBytes } from "../core/data.ts";

/** GPT-2's end-of-text token, the last of its vocabulary. */
export const END_OF_TEXT = 50256;

export const TOKENIZERS = {
  gpt2: { vocab: END_OF_TEXT + 1, encode: (text: string) => encodeBpe(text), decode: decodeBpe },
  bytes: { vocab: BYTE_VOCAB_SIZE, encode: (text: string) => [...encodeBytes(text)], decode: decodeBytes },
};

export type TokenizerName = keyof typeof TOKENIZERS;

/** `text` tokenized by `tokenizer` as a corpus named `name`, in the narrowest array its vocabulary fits. */
export function textCorpus(name: string, text: string, tokenizer: TokenizerName): Corpus {
  const { vocab, encode } = TOKENIZERS[tokenizer];
  const ids = encode(text);
  return {
    name: `${name} (${tokenizer} tokens)`,
    vocabSize: vocab,
    tokens: vocab <= 1 << 8 ? Uint8Array.from(ids) : Uint16Array.from(ids),
  };
}
