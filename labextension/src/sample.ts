// The cells of a new NDIF notebook.

export const SAMPLE_CELLS = [
  '%load_ext ndif_jupyter\nfrom ndif_jupyter import Model\n\nmodel = Model()',
  '%%ndif generate --max-new-tokens 3 --prompt "The Eiffel Tower is in the city of"\n' +
    'hidden = [layer.output.save() for layer in model.model.layers]'
];
