// Firefox for the console's browser test: Debian's firefox-esr driven over WebDriver BiDi by
// puppeteer-core (Playwright cannot drive a stock Firefox), behind the few Playwright calls
// console.test.mjs and helpers.mjs make, so the same journey runs in both browsers.

import puppeteer from 'puppeteer-core';

export const FIREFOX = process.env.CRIER_FIREFOX || '/usr/bin/firefox-esr';

/** Headless Firefox with one tab; the same shape as helpers.mjs `browser(origin)`. */
export async function firefox(origin) {
  const instance = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    defaultViewport: { width: 1280, height: 900 },
  });
  // A tab of our own, brought to the front: the tab Firefox starts with never gets the window's
  // focus here (document.hasFocus() stays false), and Firefox activates a focused button on
  // Enter only when it is the focused element of the focused window.
  const page = await instance.newPage();
  await page.bringToFront();
  const problems = [];
  const foreign = [];
  page.on('pageerror', (e) => problems.push(e.message));
  page.on('console', (m) => m.type() == 'error' && !/Failed to load resource/.test(m.text()) && problems.push(m.text()));
  page.on('request', (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) foreign.push(r.url()); });
  return { instance, tab: new Tab(page), problems, foreign };
}

/** A puppeteer page answering the Playwright `Page` calls the test makes, with their waiting. */
class Tab {
  constructor(page) {
    this.page = page;
    this.keyboard = new Keyboard(page);
  }
  goto(url) { return this.page.goto(url); }
  reload() { return this.page.reload(); }
  evaluate(fn, arg) { return this.page.evaluate(fn, arg); }
  screenshot(options) { return this.page.screenshot(options); }
  locator(selector) { return new Locator(this.page, selector); }
  waitForSelector(selector) { return this.page.waitForSelector(selector, { visible: true }); }
  // Puppeteer's locators wait until the element is visible, enabled and still, as Playwright's do.
  click(selector) { return this.page.locator(selector).click(); }
  fill(selector, value) { return this.page.locator(selector).fill(value); }
  async check(selector) {
    await this.click(selector);
    if (!(await this.page.$eval(selector, (e) => e.checked))) throw new Error(`${selector} did not become checked`);
  }
  async press(selector, key) {
    await this.locator(selector).focus();
    await this.keyboard.press(key);
  }
}

class Keyboard {
  constructor(page) { this.page = page; }
  type(text) { return this.page.keyboard.type(text); }
  async press(key) {
    const keys = key.replace('ControlOrMeta', process.platform == 'darwin' ? 'Meta' : 'Control').split('+');
    const last = keys.pop();
    for (const modifier of keys) await this.page.keyboard.down(modifier);
    await this.page.keyboard.press(last);
    for (const modifier of keys.reverse()) await this.page.keyboard.up(modifier);
  }
  // As Playwright's insertText: one input of the whole text into the focused field, no key events.
  insertText(text) { return this.page.evaluate((t) => document.execCommand('insertText', false, t), text); }
}

/** The Playwright `Locator` calls the test makes: reads wait for the element to be attached. */
class Locator {
  constructor(page, selector) {
    this.page = page;
    this.selector = selector;
  }
  first() { return this; }
  waitFor() { return this.page.waitForSelector(this.selector, { visible: true }); }
  async #read(fn, arg) { return (await this.page.waitForSelector(this.selector)).evaluate(fn, arg); }
  textContent() { return this.#read((e) => e.textContent); }
  getAttribute(name) { return this.#read((e, n) => e.getAttribute(n), name); }
  inputValue() { return this.#read((e) => e.value); }
  focus() { return this.#read((e) => e.focus()); }
  count() { return this.page.$$eval(this.selector, (all) => all.length); }
  allTextContents() { return this.page.$$eval(this.selector, (all) => all.map((e) => e.textContent)); }
}
