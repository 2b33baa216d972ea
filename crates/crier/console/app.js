// The console's shell: sign-in, navigation by URL hash (#overview, #compose, #tasks/<id>,
// #accounts/<id>, #tags) and mounting one page at a time. A page is a function
// (main, api, arg) → optional cleanup; it owns `main` until the next route.

import { Api, inWords, loadCredentials, saveCredentials } from './api.js';
import { h, status } from './ui.js';
import { overviewPage, tasksPage, accountsPage, tagsPage } from './pages.js';
import { composePage } from './compose.js';

const PAGES = {
  overview: ['Overview', overviewPage],
  compose: ['Compose', composePage],
  tasks: ['Tasks', tasksPage],
  accounts: ['Accounts', accountsPage],
  tags: ['Tags and attributes', tagsPage],
};

let api = null;
let cleanup = null;

function signInPage(main, message) {
  const saved = loadCredentials() || {};
  const form = h('form', { class: 'card signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in'),
    h('p', {}, 'Use the credentials of the REST API: the app\'s sdkappid, one of its admin identifiers, and a UserSig made for that identifier. The console keeps them in this tab only and never needs the app\'s secret key.'),
    h('label', { for: 'sdkappid' }, 'sdkappid'),
    h('input', { id: 'sdkappid', name: 'sdkappid', inputmode: 'numeric', required: true, autocomplete: 'off', value: saved.sdkappid || '' }),
    h('label', { for: 'identifier' }, 'Admin identifier'),
    h('input', { id: 'identifier', name: 'identifier', required: true, autocomplete: 'username', value: saved.identifier || 'administrator' }),
    h('label', { for: 'usersig' }, 'UserSig'),
    h('textarea', { id: 'usersig', name: 'usersig', rows: 4, required: true, spellcheck: 'false', 'aria-describedby': 'usersig-help' }),
    h('p', { id: 'usersig-help', class: 'help' },
      'Make one where the key is kept (the server\'s start-up prints this command for its development app):',
      h('code', {}, 'crier usersig --sdkappid SDKAPPID --key KEY --identifier administrator --expire 86400')),
    h('div', { id: 'signin-error', 'aria-live': 'assertive' }, message ? status(message, 'error') : null),
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const candidate = new Api({
      sdkappid: form.sdkappid.value,
      identifier: form.identifier.value,
      usersig: form.usersig.value,
    });
    const errorBox = form.querySelector('#signin-error');
    errorBox.replaceChildren(status('Checking…'));
    try {
      // Any signed read proves the three belong together.
      await candidate.call('crier/quota');
    } catch (error) {
      errorBox.replaceChildren(status(inWords(error), 'error'));
      form.usersig.focus();
      return;
    }
    saveCredentials({ sdkappid: candidate.sdkappid, identifier: candidate.identifier, usersig: candidate.usersig });
    api = candidate;
    if (!location.hash || location.hash === '#signin') location.hash = '#overview';
    else route();
  });
  main.replaceChildren(form);
  form.querySelector(saved.sdkappid ? '#usersig' : '#sdkappid').focus();
}

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const signOut = document.getElementById('sign-out');
  if (!api) {
    nav.hidden = true;
    signOut.hidden = true;
    document.getElementById('who').textContent = '';
    signInPage(main);
    return;
  }
  nav.hidden = false;
  signOut.hidden = false;
  document.getElementById('who').textContent = `${api.identifier} @ ${api.sdkappid}`;
  const [name, ...rest] = (location.hash.slice(1) || 'overview').split('/');
  const [title, page] = PAGES[name] || PAGES.overview;
  for (const link of nav.querySelectorAll('a')) {
    if (link.getAttribute('href') === `#${name}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${title} · Crier console`;
  main.replaceChildren(h('h1', { tabindex: '-1', id: 'page-title' }, title));
  cleanup = page(main, api, decodeURIComponent(rest.join('/')), {
    signedOut: (message) => { api = null; saveCredentials(null); route(); if (message) signInPage(main, message); },
  }) || null;
  main.querySelector('#page-title').focus({ preventScroll: true });
}

document.addEventListener('DOMContentLoaded', () => {
  const saved = loadCredentials();
  if (saved) api = new Api(saved);
  document.getElementById('sign-out').addEventListener('click', () => {
    api = null;
    saveCredentials(null);
    location.hash = '#signin';
    route();
  });
  window.addEventListener('hashchange', route);
  route();
});
