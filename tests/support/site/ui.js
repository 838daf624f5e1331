// The fake third-party plugin's Explorer module (seed 000, section 3.6 exports).
export const name = 'fake';
export function template() { return '<div class="fake">fake plugin</div>'; }
export function css() { return '.fake { padding: 1em; }'; }
export function init(page, api) { page.querySelector('.fake').textContent = api.escHtml(api.pluginName); }
