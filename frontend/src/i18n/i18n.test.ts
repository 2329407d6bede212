import { describe, expect, it } from "vitest";
import { dictionaries, format } from "./index";

const placeholders = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

describe("i18n", () => {
  const zhKeys = Object.keys(dictionaries.zh).sort();
  const enKeys = Object.keys(dictionaries.en).sort();

  it("has the same keys in Chinese and English", () => {
    expect(enKeys.filter((k) => !zhKeys.includes(k))).toEqual([]);
    expect(zhKeys.filter((k) => !enKeys.includes(k))).toEqual([]);
  });

  it("has no empty or untranslated-looking message", () => {
    for (const lang of ["zh", "en"] as const) {
      for (const [key, text] of Object.entries(dictionaries[lang])) {
        expect(text.trim(), `${lang}:${key}`).not.toBe("");
        expect(text, `${lang}:${key}`).not.toBe(key);
      }
    }
  });

  it("uses the same placeholders in both languages", () => {
    for (const key of zhKeys) {
      const zh = dictionaries.zh[key as keyof typeof dictionaries.zh];
      const en = dictionaries.en[key as keyof typeof dictionaries.en];
      expect(placeholders(en), key).toEqual(placeholders(zh));
    }
  });

  it("the Chinese text is Chinese where it is prose", () => {
    expect(dictionaries.zh["nav.finetune"]).toBe("模型微调");
    expect(dictionaries.zh["finetune.start"]).toBe("开始训练");
    expect(dictionaries.zh["form.advanced"]).toBe("高级参数");
    expect(dictionaries.zh["login.wrong"]).toBe("用户名或密码错误");
    expect(dictionaries.en["login.wrong"]).toBe("Wrong username or password");
  });

  it("formats placeholders", () => {
    expect(format("共 {n} 行", { n: 3 })).toBe("共 3 行");
    expect(format("{a} and {b}", { a: 1 })).toBe("1 and {b}");
  });
});
