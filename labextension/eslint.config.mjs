// This folder's TypeScript. The widget's ../ndif_jupyter/widgets/static/browser.js has its own eslint.widget.config.mjs
// and tsconfig.widget.json, and is left out of prettier.
import eslint from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  { ignores: ['lib/', 'node_modules/'] },
  eslint.configs.recommended,
  tseslint.configs.recommended
);
