// The sidebar's text: module paths as Python, counts and durations as people read them.

import { describe, expect, it } from 'vitest';

import { outputExpression, pythonPath, shortCount, shortDuration } from '../src/paths';

describe('pythonPath', () => {
  it('writes numeric parts as indices under the cell model', () => {
    expect(pythonPath('model.layers.3.mlp')).toBe('model.model.layers[3].mlp');
    expect(pythonPath('transformer.h.11')).toBe('model.transformer.h[11]');
    expect(pythonPath('')).toBe('model');
  });

  it('inserts the output of a clicked module', () => {
    expect(outputExpression('model.layers.0.self_attn')).toBe('model.model.layers[0].self_attn.output');
  });
});

describe('shortCount', () => {
  it('uses K, M and B with two significant digits', () => {
    expect(shortCount(64)).toBe('64');
    expect(shortCount(23_232)).toBe('23K');
    expect(shortCount(134_515_008)).toBe('135M');
    expect(shortCount(7_000_000_000)).toBe('7B');
    expect(shortCount(1_500)).toBe('1.5K');
  });
});

describe('shortDuration', () => {
  it('keeps a decimal below ten seconds and rounds above', () => {
    expect(shortDuration(0.34)).toBe('0.3 s');
    expect(shortDuration(12.4)).toBe('12 s');
    expect(shortDuration(600)).toBe('10 min');
    expect(shortDuration(null)).toBe('');
  });
});
