// For ../ndif_jupyter/widgets/static/browser.js, linted from the repository root (`npm run lint:widget`): a plain
// ES module that anywidget loads as it is. tsc (tsconfig.widget.json) checks its names and types, hence no no-undef.
import eslint from '@eslint/js';
import { defineConfig } from 'eslint/config';

export default defineConfig({
  files: ['ndif_jupyter/widgets/static/browser.js'],
  extends: [eslint.configs.recommended],
  languageOptions: { ecmaVersion: 2022, sourceType: 'module' },
  rules: { 'no-undef': 'off' }
});
