// A model's module tree: one row per module with its name, class and parameter count, each with its full text in a
// tooltip for when the sidebar cuts it; a click on a name picks its dotted path.

// @vitest-environment jsdom

import { describe, expect, it, vi } from 'vitest';

import { renderModuleTree } from '../src/tree';

const root = {
  name: '',
  class: 'LlamaForCausalLM',
  parameters: 171_000,
  children: [
    {
      name: 'model',
      class: 'LlamaModel',
      parameters: 148_000,
      children: [{ name: 'post_attention_layernorm', class: 'LlamaRMSNorm', parameters: 64, children: [] }]
    },
    { name: 'rotary_emb', class: 'LlamaRotaryEmbedding', parameters: 0, children: [] }
  ]
};

describe('renderModuleTree', () => {
  it('gives each module a row of its name, class and count, each titled with its full text', () => {
    const tree = renderModuleTree(root, () => undefined);
    const row = tree.querySelector('[data-path="model.post_attention_layernorm"] > .ndif-tree-row') as HTMLElement;
    const parts = [...row.children].map(part => [part.className, part.textContent, (part as HTMLElement).title]);
    expect(parts).toEqual([
      ['ndif-tree-toggle', '', ''],
      [
        'ndif-tree-label',
        'post_attention_layernorm',
        'model.model.post_attention_layernorm (LlamaRMSNorm) — click to insert model.model.post_attention_layernorm.output'
      ],
      ['ndif-tree-class', 'LlamaRMSNorm', 'LlamaRMSNorm'],
      ['ndif-tree-count', '64', '64 parameters']
    ]);
    const noWeights = tree.querySelector('[data-path="rotary_emb"] .ndif-tree-count') as HTMLElement;
    expect([noWeights.textContent, noWeights.title]).toEqual(['', '']);
  });

  it('picks the dotted path of a clicked name and folds and unfolds a module', () => {
    const pick = vi.fn();
    const tree = renderModuleTree(root, pick);
    const model = tree.querySelector('[data-path="model"]') as HTMLElement;
    (model.querySelector('.ndif-tree-label') as HTMLElement).click();
    expect(pick).toHaveBeenCalledWith('model');
    expect(model.classList.contains('ndif-open')).toBe(true);
    (model.querySelector('.ndif-tree-toggle') as HTMLElement).click();
    expect(model.classList.contains('ndif-open')).toBe(false);
    expect(model.querySelector('.ndif-tree-toggle')?.textContent).toBe('▸');
  });
});
