-- Deterministic synthetic facilities shaped like the Open Apparel Registry.
--
-- Run through scripts/load-sample.sh, which sets the psql variables
--   rows    number of facilities
--   schema  target schema (created if missing)
--   table   target table (dropped and recreated)
--
-- Every pseudo-random value is a pure function of a row number and a salt
-- (pg_temp.u below), never random(), so the same :rows gives identical data on
-- every run and machine (and row i is the same whatever :rows is). The hash is plain 64-bit integer arithmetic rather
-- than md5(): it is ~10x cheaper per value, which is what makes a million rows
-- take seconds, and it is defined entirely in this file. Likewise the float
-- maths sticks to + - * / and rounding, which IEEE 754 defines exactly,
-- and avoids ln/sin/cos/pow, whose last bit may vary between libm versions
-- and CPUs (Gaussians are Irwin-Hall sums instead of Box-Muller).
--
-- Shape:
--  * 85% of rows belong to 30 real apparel hubs, weighted like the OAR (Dhaka
--    and Guangzhou dominate). Each hub has named districts with their own
--    centres; a facility is Gaussian around its district's centre,
--    with a 4x wider tail for 10% of them. The district also appears in the
--    address, so the two agree.
--  * 15% of hub rows are "in the same building" as the row before: they reuse
--    its location and address exactly.
--  * 15% of rows are a thin scatter inside rough land bounding boxes of 42
--    garment-producing countries, with a matching country code.

\set ON_ERROR_STOP on
\set idx_name :table '_location_gist'
SET client_min_messages = warning;

BEGIN;
CREATE EXTENSION IF NOT EXISTS postgis;
-- JIT-compiling the big inlined expressions below costs far more than it
-- saves (3x slower overall at 1M rows).
SET LOCAL jit = off;
-- Lets the index builds at 1M rows run in memory.
SET LOCAL maintenance_work_mem = '256MB';

-- Classic 32-bit xorshift-multiply integer hash (constant 0x45d9f3b): a
-- bijection on [0, 2^32) with good avalanche. Written as one expression so
-- that it inlines into plain operators; x is repeated, so only ever pass it
-- cheap arguments (otherwise the planner refuses to inline).
CREATE FUNCTION pg_temp.h32(x bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ((((x # (x >> 16)) * 73244475 & 4294967295) # (((x # (x >> 16)) * 73244475 & 4294967295) >> 16)) * 73244475 & 4294967295)
           # (((((x # (x >> 16)) * 73244475 & 4294967295) # (((x # (x >> 16)) * 73244475 & 4294967295) >> 16)) * 73244475 & 4294967295) >> 16) $$;

-- 32 pseudo-random bits for row/location number n and an attribute salt, and
-- the same as a uniform [0,1). Salts in use:
--   1 shares-building  2 hub          3 district/country  4, 5, 23, 24 position
--   6 tail/zone        7 city         8 number            9 street  10 road no.
--  11 name template   12 local word  13 prefix           14 legal form
--  15 product         16 kind        17 2nd prefix       18 contributors
--  19 created         20 updated     21, 22, 25, 26 district centres
CREATE FUNCTION pg_temp.bits(n bigint, salt int) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_temp.h32((n * 2654435761 + salt) & 4294967295) $$;
CREATE FUNCTION pg_temp.u(n bigint, salt int) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_temp.bits(n, salt) / 4294967296.0::float8 $$;

-- Approximately standard normal value from 64 random bits (two bits() results):
-- the sum of four 16-bit uniforms, centred and scaled to unit variance
-- (Irwin-Hall; bounded at +-3.46, which suits "a few km around a centre").
-- Pass columns, not expressions: a and b are used twice each.
CREATE FUNCTION pg_temp.gauss(a bigint, b bigint) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (((a >> 16) + (a & 65535) + (b >> 16) + (b & 65535) + 2) / 65536.0::float8 - 2)
             * 1.7320508075688772 $$;

-- cos() of an angle in degrees by its Taylor series (|error| < 1e-7 up to
-- 50 degrees), to stay clear of libm.
CREATE FUNCTION pg_temp.cos_deg(deg float8) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 1 - x2 / 2 + x2 * x2 / 24 - x2 * x2 * x2 / 720 + x2 * x2 * x2 * x2 / 40320
      FROM (SELECT (deg * 0.017453292519943295) * (deg * 0.017453292519943295)) AS t(x2) $$;

-- Does row j share the building of row j - 1? (15% of rows; never row 1)
CREATE FUNCTION pg_temp.shares(j bigint) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT j > 1 AND pg_temp.u(j, 1) < 0.15 $$;

-- Element of an array chosen by a uniform [0,1); NULL for an empty array.
CREATE FUNCTION pg_temp.pick(a text[], x float8) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT a[1 + floor(x * cardinality(a))::int] $$;

-- One base-36 digit (0-9A-Z), and six of them for 0 <= v < 36^6.
CREATE FUNCTION pg_temp.d36(d bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT chr((d + CASE WHEN d < 10 THEN 48 ELSE 55 END)::int) $$;
CREATE FUNCTION pg_temp.b36(v bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_temp.d36(v / 60466176 % 36) || pg_temp.d36(v / 1679616 % 36) || pg_temp.d36(v / 46656 % 36)
          || pg_temp.d36(v / 1296 % 36) || pg_temp.d36(v / 36 % 36) || pg_temp.d36(v % 36) $$;

-- Apparel hubs: real city coordinates; weight ~ relative number of OAR
-- facilities; spread_km ~ size of the manufacturing area; districts are real
-- industrial areas (the first one sits at the hub centre and gets most rows).
CREATE TEMP TABLE hub (
    id int PRIMARY KEY, city text, cc text, lon float8, lat float8,
    weight float8, spread_km float8, districts text[]
) ON COMMIT DROP;
INSERT INTO hub VALUES
 ( 1, 'Dhaka',            'BD',  90.4125,  23.8103, 13.0,  8, '{Mirpur,Tejgaon,Savar,Ashulia,Uttara,Badda,Hemayetpur,Mohakhali,Dhamrai,Kafrul}'),
 ( 2, 'Gazipur',          'BD',  90.4203,  23.9999,  7.0, 10, '{Konabari,Tongi,Kashimpur,"Board Bazar",Chandra,Sreepur,Kaliakair,Joydebpur}'),
 ( 3, 'Narayanganj',      'BD',  90.5000,  23.6238,  3.0,  6, '{Fatullah,Siddhirganj,Rupganj,"Adamjee EPZ",Kanchpur,Sonargaon}'),
 ( 4, 'Chattogram',       'BD',  91.8123,  22.3569,  4.0,  8, '{Nasirabad,Kalurghat,Agrabad,CEPZ,"Karnaphuli EPZ",Bayezid,Halishahar,Sitakunda}'),
 ( 5, 'Guangzhou',        'CN', 113.2644,  23.1291, 10.0, 20, '{Baiyun,Panyu,Haizhu,Zengcheng,Huadu,Liwan,Tianhe,Nansha}'),
 ( 6, 'Dongguan',         'CN', 113.7518,  23.0207,  5.0, 15, '{Humen,Dalang,"Chang''an",Houjie,Tangxia,Qingxi,Chashan,Shijie}'),
 ( 7, 'Shenzhen',         'CN', 114.0579,  22.5431,  3.0, 12, '{"Bao''an",Longgang,Longhua,Buji,Pingshan,Guangming}'),
 ( 8, 'Ningbo',           'CN', 121.5440,  29.8683,  3.0, 15, '{Yinzhou,Beilun,Cixi,Yuyao,Fenghua,Zhenhai}'),
 ( 9, 'Shaoxing',         'CN', 120.5810,  30.0023,  3.0, 12, '{Keqiao,Yuecheng,Shangyu,Zhuji,Paojiang}'),
 (10, 'Quanzhou',         'CN', 118.6759,  24.8741,  2.0, 15, '{Jinjiang,Shishi,Licheng,Fengze,"Nan''an"}'),
 (11, 'Ho Chi Minh City', 'VN', 106.6297,  10.8231,  5.0, 15, '{"Binh Tan","Tan Binh","Thu Duc","Go Vap","District 12","Tan Phu","Cu Chi"}'),
 (12, 'Hanoi',            'VN', 105.8342,  21.0278,  2.5, 15, '{"Long Bien","Gia Lam","Dong Anh","Ha Dong","Hoang Mai","Thanh Tri"}'),
 (13, 'Tiruppur',         'IN',  77.3411,  11.1085,  4.0,  8, '{Avinashi,Palladam,Kangeyam,Uthukuli,Perumanallur,Mangalam}'),
 (14, 'Bengaluru',        'IN',  77.5946,  12.9716,  2.5, 12, '{Peenya,Bommasandra,Yeshwanthpur,"Electronic City",Jigani,"Mysore Road"}'),
 (15, 'Gurugram',         'IN',  77.0266,  28.4595,  3.0, 18, '{"Udyog Vihar",Manesar,Okhla,Noida,Faridabad,Naraina}'),
 (16, 'Ludhiana',         'IN',  75.8573,  30.9010,  1.5,  8, '{"Focal Point","Industrial Area A","Dhandari Kalan",Sherpur,Giaspura}'),
 (17, 'Mumbai',           'IN',  72.8777,  19.0760,  1.5, 10, '{Andheri,"Lower Parel",Kurla,Bhiwandi,Thane,Vasai}'),
 (18, 'Istanbul',         'TR',  28.9784,  41.0082,  4.0, 15, '{Bağcılar,Güngören,Esenyurt,Zeytinburnu,Bayrampaşa,Merter,Avcılar,Beylikdüzü}'),
 (19, 'Bursa',            'TR',  29.0610,  40.1885,  1.5, 10, '{Osmangazi,Nilüfer,Yıldırım,İnegöl,Gemlik}'),
 (20, 'Karachi',          'PK',  67.0011,  24.8607,  2.5, 12, '{Korangi,"SITE Area",Landhi,"North Karachi","F.B. Area","Port Qasim"}'),
 (21, 'Lahore',           'PK',  74.3587,  31.5204,  2.0, 12, '{"Kot Lakhpat",Sundar,Raiwind,Shahdara,Gulberg}'),
 (22, 'Faisalabad',       'PK',  73.1350,  31.4504,  2.0,  8, '{"Jaranwala Road","Sargodha Road",Khurrianwala,"Samundri Road","Satiana Road"}'),
 (23, 'Phnom Penh',       'KH', 104.9282,  11.5564,  3.0, 12, '{"Por Sen Chey",Meanchey,Dangkao,"Chbar Ampov","Kandal Stueng"}'),
 (24, 'Jakarta',          'ID', 106.8456,  -6.2088,  2.5, 20, '{Cakung,Tangerang,Bekasi,Cikarang,Bogor,Cileungsi}'),
 (25, 'Bandung',          'ID', 107.6191,  -6.9175,  1.5, 12, '{Majalaya,Cimahi,Rancaekek,Soreang,Dayeuhkolot}'),
 (26, 'Colombo',          'LK',  79.8612,   6.9271,  1.5, 15, '{Katunayake,Biyagama,Seeduwa,Ja-Ela,Kelaniya,Horana}'),
 (27, 'Yangon',           'MM',  96.1735,  16.8409,  1.5, 12, '{"Hlaing Tharyar",Shwepyithar,Mingaladon,Thaketa,"South Dagon",Insein}'),
 (28, 'Los Angeles',      'US',-118.2437,  34.0522,  1.5, 12, '{Vernon,Commerce,"Downtown LA","El Monte",Gardena,Compton}'),
 (29, 'Porto',            'PT',  -8.6291,  41.1579,  1.0, 15, '{"Vila Nova de Famalicão",Barcelos,Guimarães,"Santo Tirso","Paços de Ferreira","Vila do Conde"}'),
 (30, 'Prato',            'IT',  11.1022,  43.8777,  1.0,  6, '{Macrolotto,Iolo,Tavola,Montemurlo,Vaiano,Calenzano}');

-- Countries: naming/address conventions, and a rough land bounding box plus a
-- weight for the thin scatter. Empty arrays fall back to the generic lists.
CREATE TEMP TABLE country (
    cc text PRIMARY KEY, scatter_weight float8,
    lon0 float8, lon1 float8, lat0 float8, lat1 float8,
    cities text[], prefixes text[], name_fmts text[], addr_fmt text, streets text[]
) ON COMMIT DROP;
INSERT INTO country VALUES
 ('BD', 2.0,  88.5,  92.0,  21.5,  25.5, '{Savar,Mymensingh,Cumilla,Khulna,Rajshahi,Bogura}',
  '{Ha-Meem,Fakir,Mondol,Square,Karim,Rahman,Akij,Padma,Meghna,Jamuna,"Sonar Bangla",Nassa,Babylon,Opex,Purbani,Rupsha}',
  '{"%s Ltd.","%s Ltd.","%s Limited","%s (Pvt.) Ltd."}', 'Plot %1$s, Road %2$s, %3$s, %4$s', '{}'),
 ('CN', 10.0, 104.0, 121.0,  22.5,  40.0, '{Suzhou,Hangzhou,Qingdao,Xiamen,Wuhan,Changzhou,Wuxi,Nantong,Jiaxing,Huzhou,Fuzhou,Shantou}',
  '{Huafeng,Jinlong,Xinhua,Hengli,Yongsheng,Dongfang,Hongda,Tianhe,Baoli,Shengtai,Jiahe,Meida,Zhongxing,Fuda,Longteng,Haitian}',
  '{"%s Co., Ltd.","%s Co., Ltd.","%s Garment Factory","%s Industrial Co., Ltd."}', 'No. %1$s %5$s Road, %3$s, %4$s',
  '{Xingye,Huancheng,Gongye,Jianshe,Renmin,Zhongshan,Fuxing,"Chang''an",Yingbin,Dongfeng}'),
 ('VN', 3.0, 104.5, 108.5,  10.0,  21.5, '{"Da Nang","Hai Phong","Nam Dinh","Binh Duong","Dong Nai","Long An"}',
  '{"Viet Tien","Phong Phu","Thanh Cong","Hoa Tho",Saigon,"Song Hong","Nha Be","Tien Tien","An Phuoc","Duc Giang"}',
  '{"%s Co., Ltd.","%s Joint Stock Company","%s JSC","%s Corporation"}', '%1$s %5$s Street, %3$s, %4$s',
  '{"Nguyen Van Linh","Le Loi","Tran Hung Dao","Hai Ba Trung","Quang Trung","Ly Thuong Kiet"}'),
 ('IN', 8.0,  73.0,  88.0,  10.0,  29.0, '{Kolkata,Jaipur,Kanpur,Ahmedabad,Surat,Chennai,Erode,Panipat}',
  '{Shahi,Arvind,Gokaldas,Vardhman,Trident,"Sri Lakshmi",Ganesh,Shiva,Balaji,Krishna,Murugan,Annapurna,Maruti,Bharat}',
  '{"%s Pvt. Ltd.","%s Pvt. Ltd.","%s Limited","%s Exports","%s LLP"}', 'No. %1$s, %5$s, %3$s, %4$s',
  '{"Avinashi Road","Palladam Road","Industrial Estate","Ring Road","Hosur Road","GT Road","Mill Road"}'),
 ('TR', 3.0,  27.0,  42.0,  37.0,  41.0, '{Denizli,İzmir,Gaziantep,Kahramanmaraş,Adana,Tekirdağ}',
  '{Yıldız,Özdemir,Akın,Başak,Ege,Marmara,Anadolu,Kaya,Çelik,Doğan,Aydın,Karadeniz}',
  '{"%s Tekstil San. ve Tic. A.Ş.","%s Konfeksiyon Ltd. Şti.","%s Giyim San. Tic. Ltd. Şti.","%s A.Ş."}', '%5$s Cad. No:%1$s, %3$s, %4$s',
  '{Atatürk,Cumhuriyet,İstiklal,"Organize Sanayi",Fatih,Yıldırım}'),
 ('PK', 3.0,  67.0,  74.5,  25.0,  33.5, '{Sialkot,Multan,Gujranwala,Islamabad}',
  '{Nishat,"Gul Ahmed",Sapphire,Kohinoor,Crescent,Masood,Interloop,Al-Karam,Chenab,Ravi,Indus,Lucky}',
  '{"%s (Pvt.) Ltd.","%s (Pvt) Limited","%s Limited","%s Industries"}', 'Plot %1$s, Sector %2$s, %3$s, %4$s', '{}'),
 ('KH', 1.0, 102.5, 107.0,  10.8,  14.0, '{"Kampong Speu",Kandal,Takeo,"Svay Rieng"}',
  '{Angkor,Mekong,Tonle,Bayon,Khmer,Sovannaphum}',
  '{"%s Co., Ltd.","%s (Cambodia) Co., Ltd.","%s Garment Co., Ltd."}', 'No. %1$s, %5$s, %3$s, %4$s',
  '{"National Road 4","Veng Sreng Blvd","Street 2004","National Road 2"}'),
 ('ID', 2.0, 105.5, 114.0,  -8.0,  -6.3, '{Semarang,Surakarta,Surabaya,Bogor,Pekalongan}',
  '{Sritex,"Pan Brothers",Busana,Sinar,Cahaya,Mitra,Bintang,Nusantara,"Jaya Abadi",Sentosa}',
  '{"PT %s","PT %s","PT %s Tbk","CV %s"}', 'Jl. %5$s No. %1$s, %3$s, %4$s',
  '{"Raya Industri","Jenderal Sudirman","Gatot Subroto","Raya Bogor","Soekarno-Hatta"}'),
 ('LK', 0.5,  79.9,  81.7,   6.1,   9.5, '{Kandy,Galle,Kurunegala,Matara}',
  '{Brandix,MAS,Hirdaramani,Lanka,Ceylon,Ruhuna,Kelani}',
  '{"%s (Pvt) Ltd","%s PLC","%s Lanka (Pvt) Ltd"}', 'No. %1$s, %5$s, %3$s, %4$s', '{"Negombo Road","Kandy Road","Galle Road","Main Street"}'),
 ('MM', 1.0,  94.5,  98.5,  16.0,  23.0, '{Bago,Mandalay,Pathein}',
  '{Shwe,"Golden Land",Irrawaddy,Yoma,Aung,Myitta}',
  '{"%s Co., Ltd.","%s Garment Co., Ltd.","%s Myanmar Co., Ltd."}', 'No. %1$s, %5$s, %3$s, %4$s', '{"Pyay Road","Bayint Naung Road","Industrial Zone Road"}'),
 ('US', 8.0,-122.0, -75.0,  30.0,  46.0, '{"New York",Charlotte,Dallas,Chicago,Atlanta,Seattle,Miami,"Fall River"}',
  '{American,"Golden State",Westside,Sunset,Bay,Coast,Liberty,Union}',
  '{"%s Inc.","%s LLC","%s Corp.","%s Co."}', '%1$s %5$s, %3$s, %4$s',
  '{"S Alameda St","E Washington Blvd","Santa Fe Ave","Industrial Way","Commerce St","Maple Ave"}'),
 ('PT', 2.0,  -8.6,  -7.0,  38.5,  41.9, '{Barcelos,Guimarães,Braga,Covilhã,Lisboa}',
  '{"Têxtil do Ave",Minho,Douro,Lusitânia,Atlântico,Famalicense}',
  '{"%s, Lda.","%s, S.A.","%s Unipessoal, Lda."}', '%5$s, %1$s, %3$s, %4$s',
  '{"Rua da Indústria","Avenida da Liberdade","Rua do Comércio","Rua de São Bento","Zona Industrial"}'),
 ('IT', 3.0,   8.5,  16.0,  40.5,  45.8, '{Biella,Como,Carpi,Napoli,Milano,Treviso}',
  '{"Lanificio Toscano",Tessitura,Filatura,Bisenzio,Medicea,Etrusca,Arno}',
  '{"%s S.r.l.","%s S.p.A.","%s S.n.c."}', 'Via %5$s %1$s, %3$s, %4$s',
  '{Roma,"Galileo Galilei","dell''Industria",Garibaldi,Mazzini,"del Lavoro"}'),
 ('MX', 5.0,-105.0, -96.0,  17.0,  25.0, '{Puebla,Tehuacán,León,Guadalajara,"Ciudad de México",Monterrey,Aguascalientes}',
  '{Azteca,Maya,"Del Norte",Sol,"Textiles del Valle",Jalisco}', '{"%s S.A. de C.V.","%s S. de R.L. de C.V."}',
  'Calle %5$s %1$s, %3$s, %4$s', '{Industrial,Principal,Reforma,Juárez,Hidalgo,"5 de Mayo"}'),
 ('GT', 2.0, -91.5, -89.0,  14.2,  15.5, '{"Guatemala City","Villa Nueva",Mixco,Chimaltenango}', '{}', '{"%s S.A."}',
  'Calle %5$s %1$s, %3$s, %4$s', '{Industrial,Principal,Reforma}'),
 ('HN', 2.0, -88.5, -86.0,  14.0,  15.6, '{"San Pedro Sula",Choloma,Villanueva,Tegucigalpa}', '{}', '{"%s S.A.","%s S. de R.L."}',
  'Calle %5$s %1$s, %3$s, %4$s', '{Industrial,Principal,"Zona Libre"}'),
 ('SV', 1.0, -89.7, -88.0,  13.5,  14.2, '{"San Salvador","Santa Ana","San Miguel"}', '{}', '{"%s S.A. de C.V."}',
  'Calle %5$s %1$s, %3$s, %4$s', '{Industrial,Principal}'),
 ('CO', 2.0, -76.5, -73.0,   3.0,   7.5, '{Medellín,Bogotá,Cali,Pereira}', '{}', '{"%s S.A.S.","%s S.A."}',
  'Calle %5$s %1$s, %3$s, %4$s', '{Industrial,Principal,"El Poblado"}'),
 ('PE', 2.0, -78.5, -75.0, -13.5,  -7.0, '{Lima,Arequipa,Trujillo}', '{}', '{"%s S.A.C.","%s S.A."}',
  'Calle %5$s %1$s, %3$s, %4$s', '{Industrial,Principal,Gamarra}'),
 ('BR', 4.0, -52.0, -40.0, -28.0, -10.0, '{"São Paulo",Blumenau,Fortaleza,Brusque,"Belo Horizonte"}', '{}', '{"%s Ltda.","%s S.A."}',
  'Rua %5$s, %1$s, %3$s, %4$s', '{"das Indústrias","XV de Novembro","Sete de Setembro","Dom Pedro II"}'),
 ('GB', 2.0,  -3.5,   0.5,  51.0,  54.5, '{Leicester,Manchester,London,Nottingham}', '{}', '{"%s Ltd","%s Limited"}',
  NULL, '{"Mill Lane","Station Road","Victoria Street","High Street"}'),
 ('ES', 2.0,  -6.5,  -0.5,  37.5,  42.5, '{Barcelona,Valencia,Elche,"A Coruña",Madrid}', '{}', '{"%s S.L.","%s S.A."}',
  'Calle %5$s %1$s, %3$s, %4$s', '{Industria,Mayor,Real,"de la Constitución"}'),
 ('FR', 1.0,   0.0,   6.0,  44.0,  49.5, '{Lyon,Roubaix,Troyes,Cholet,Paris}', '{}', '{"%s SAS","%s SARL"}',
  '%1$s rue %5$s, %3$s, %4$s', '{"de l''Industrie","de la République","Jean Jaurès","Victor Hugo"}'),
 ('DE', 1.0,   7.0,  13.5,  48.5,  53.5, '{Mönchengladbach,Berlin,München,Hamburg}', '{}', '{"%s GmbH","%s GmbH & Co. KG"}',
  '%5$s %1$s, %3$s, %4$s', '{Industriestraße,Hauptstraße,Bahnhofstraße}'),
 ('PL', 1.0,  15.5,  23.5,  50.0,  54.0, '{Łódź,Poznań,Warszawa,Białystok}', '{}', '{"%s Sp. z o.o."}',
  'ul. %5$s %1$s, %3$s, %4$s', '{Przemysłowa,Główna,Fabryczna}'),
 ('RO', 1.5,  22.0,  28.0,  44.5,  47.5, '{București,Iași,Timișoara,Cluj-Napoca}', '{}', '{"%s S.R.L.","%s S.A."}',
  'Strada %5$s %1$s, %3$s, %4$s', '{Industriilor,Fabricii,Principală}'),
 ('BG', 1.0,  22.5,  27.5,  42.0,  44.0, '{Sofia,Plovdiv,Gabrovo}', '{}', '{"%s EOOD","%s OOD"}', NULL, '{}'),
 ('MA', 2.0,  -9.0,  -4.0,  30.0,  35.0, '{Casablanca,Tanger,Fès,Rabat}', '{}', '{"%s SARL","%s S.A."}', NULL, '{}'),
 ('TN', 1.5,   8.5,  11.0,  33.5,  37.0, '{Tunis,Sousse,Monastir,Sfax}', '{}', '{"%s SARL","%s S.A."}', NULL, '{}'),
 ('EG', 2.0,  29.5,  32.5,  26.0,  31.0, '{Cairo,Alexandria,"10th of Ramadan City","Port Said"}', '{}', '{"%s S.A.E.","%s Co."}', NULL, '{}'),
 ('ET', 1.5,  35.5,  42.0,   6.0,  13.0, '{"Addis Ababa",Hawassa,Mekelle,"Bahir Dar"}', '{}', '{"%s PLC","%s Share Company"}', NULL, '{}'),
 ('KE', 1.0,  34.5,  40.0,  -4.0,   2.0, '{Nairobi,"Athi River",Mombasa}', '{}', '{"%s Ltd","%s EPZ Ltd"}', NULL, '{}'),
 ('MG', 1.0,  44.0,  50.0, -25.0, -13.0, '{Antananarivo,Antsirabe}', '{}', '{"%s SARL","%s S.A."}', NULL, '{}'),
 ('ZA', 1.0,  18.5,  32.0, -34.0, -23.0, '{Durban,"Cape Town",Johannesburg}', '{}', '{"%s (Pty) Ltd"}', NULL, '{}'),
 ('JO', 1.0,  35.5,  37.0,  30.0,  32.5, '{Amman,Irbid,"Al-Hassan Industrial Estate"}', '{}', '{"%s Co.","%s L.L.C."}', NULL, '{}'),
 ('TH', 2.0,  98.5, 104.5,   7.0,  19.0, '{Bangkok,"Samut Prakan","Chiang Mai","Nakhon Ratchasima"}', '{}', '{"%s Co., Ltd.","%s Public Co., Ltd."}', NULL, '{}'),
 ('MY', 1.0, 100.5, 103.5,   1.5,   6.5, '{"Kuala Lumpur",Penang,"Johor Bahru"}', '{}', '{"%s Sdn. Bhd.","%s Bhd."}', NULL, '{}'),
 ('PH', 1.0, 120.0, 125.0,   7.0,  18.0, '{Manila,Cebu,Cavite,Clark}', '{}', '{"%s Inc.","%s Corporation"}', NULL, '{}'),
 ('JP', 1.0, 132.0, 140.5,  33.5,  37.5, '{Osaka,Tokyo,Okayama,Gifu}', '{}', '{"%s Co., Ltd.","%s K.K."}', NULL, '{}'),
 ('KR', 1.0, 126.8, 129.2,  35.0,  37.8, '{Seoul,Busan,Daegu}', '{}', '{"%s Co., Ltd.","%s Corp."}', NULL, '{}'),
 ('TW', 1.0, 120.3, 121.6,  22.5,  25.0, '{Taipei,Taichung,Tainan}', '{}', '{"%s Co., Ltd.","%s Corp."}', NULL, '{}'),
 ('AU', 0.5, 115.0, 153.0, -37.5, -22.0, '{Melbourne,Sydney,Brisbane}', '{}', '{"%s Pty Ltd"}', NULL, '{}');

-- Lookup tables turning one uniform into a weighted choice with an equi-join
-- (4096 slots: fine enough for these weights, and hash-joinable).
-- hub_id 0 = the scatter, which gets 15% of the slots.
CREATE TEMP TABLE hub_slot ON COMMIT DROP AS
WITH w AS (
    SELECT id, 0.85 * weight / sum(weight) OVER () AS w FROM hub
    UNION ALL SELECT 0, 0.15
), c AS (
    SELECT id, sum(w) OVER (ORDER BY id) - w AS lo, sum(w) OVER (ORDER BY id) AS hi FROM w
)
SELECT s AS slot, c.id AS hub_id
FROM generate_series(0, 4095) s JOIN c ON (s + 0.5) / 4096 >= c.lo AND (s + 0.5) / 4096 < c.hi;

CREATE TEMP TABLE country_slot ON COMMIT DROP AS
WITH c AS (
    SELECT cc, sum(scatter_weight) OVER (ORDER BY cc) / sum(scatter_weight) OVER () AS hi,
           (sum(scatter_weight) OVER (ORDER BY cc) - scatter_weight) / sum(scatter_weight) OVER () AS lo
    FROM country
)
SELECT s AS slot, c.cc
FROM generate_series(0, 4095) s JOIN c ON (s + 0.5) / 4096 >= c.lo AND (s + 0.5) / 4096 < c.hi;

-- District centres: the first at the hub centre, the others scattered around
-- it (Gaussian, 0.8 x spread). Facilities then cluster around these with
-- sigma = 0.3 x spread.
CREATE TEMP TABLE district ON COMMIT DROP AS
SELECT h.id AS hub_id, d.n, d.name, h.spread_km * 0.3 AS sigma_km,
       111.32 * pg_temp.cos_deg(h.lat) AS km_per_lon_degree,
       h.lat + CASE WHEN d.n = 1 THEN 0 ELSE h.spread_km * 0.8 * pg_temp.gauss(r.a, r.b) / 111.32 END AS lat,
       h.lon + CASE WHEN d.n = 1 THEN 0 ELSE h.spread_km * 0.8 * pg_temp.gauss(r.c, r.e)
                                             / (111.32 * pg_temp.cos_deg(h.lat)) END AS lon
FROM hub h
CROSS JOIN LATERAL unnest(h.districts) WITH ORDINALITY AS d(name, n)
CROSS JOIN LATERAL (SELECT pg_temp.bits(h.id * 100 + d.n, 21), pg_temp.bits(h.id * 100 + d.n, 22),
                           pg_temp.bits(h.id * 100 + d.n, 25), pg_temp.bits(h.id * 100 + d.n, 26)
                    OFFSET 0) AS r(a, b, c, e);
ALTER TABLE district ADD PRIMARY KEY (hub_id, n);

-- Temp tables have no statistics otherwise; good estimates keep the big join
-- below on hash joins.
ANALYZE hub; ANALYZE country; ANALYZE hub_slot; ANALYZE country_slot; ANALYZE district;

CREATE SCHEMA IF NOT EXISTS :"schema";
DROP TABLE IF EXISTS :"schema".:"table";
-- The result is exactly
--
--   CREATE TABLE <schema>.<table> (
--     id bigint PRIMARY KEY,
--     os_id text NOT NULL UNIQUE,
--     name text NOT NULL,
--     address text NOT NULL,
--     country_code char(2) NOT NULL,
--     contributors integer NOT NULL,
--     created_at timestamptz NOT NULL,
--     updated_at timestamptz NOT NULL,
--     location geometry(Point, 4326) NOT NULL
--   );
--   CREATE INDEX <table>_location_gist ON <schema>.<table> USING gist (location);
--
-- but built with CREATE TABLE AS and constraints added afterwards: that is
-- faster, and unlike INSERT (which back-fills earlier pages via the free space
-- map) it stores the rows strictly in id order, so even the physical layout,
-- and thus the output order of unordered scans, is reproducible.
CREATE TABLE :"schema".:"table" AS
WITH base AS (
    -- start = first row of the building this row is in: the nearest row at or
    -- before it that does not share. Looking back at most 7 rows keeps this a
    -- local function of i (a run of 8 sharers, p = 3e-7, just starts anew).
    SELECT i, CASE WHEN NOT pg_temp.shares(i) THEN i
                   WHEN NOT pg_temp.shares(i - 1) THEN i - 1
                   WHEN NOT pg_temp.shares(i - 2) THEN i - 2
                   WHEN NOT pg_temp.shares(i - 3) THEN i - 3
                   WHEN NOT pg_temp.shares(i - 4) THEN i - 4
                   WHEN NOT pg_temp.shares(i - 5) THEN i - 5
                   WHEN NOT pg_temp.shares(i - 6) THEN i - 6
                   WHEN NOT pg_temp.shares(i - 7) THEN i - 7
                   ELSE i END AS start
    FROM generate_series(1, :rows::bigint) AS i
    OFFSET 0  -- evaluate the CASE once, not at every use of start
), located AS (
    -- The building's hub decides whether the row is clustered (hub_id > 0).
    -- loc numbers everything about the place; scatter rows never share one.
    SELECT b.i, s.hub_id, CASE WHEN s.hub_id > 0 THEN b.start ELSE b.i END AS loc
    FROM base b
    JOIN hub_slot s ON s.slot = floor(pg_temp.u(b.start, 2) * 4096)::int
    OFFSET 0
), keyed AS (
    -- Random bits for the position, materialised for gauss().
    SELECT l.*, pg_temp.bits(loc, 4) AS g1, pg_temp.bits(loc, 5) AS g2,
           pg_temp.bits(loc, 23) AS g3, pg_temp.bits(loc, 24) AS g4
    FROM located l
    OFFSET 0
), placed AS (
    SELECT k.i, k.loc, c.cc, c.name_fmts, c.prefixes, c.addr_fmt, c.streets,
           coalesce(h.city, pg_temp.pick(c.cities, pg_temp.u(k.loc, 7))) AS city,
           coalesce(d.name, pg_temp.pick('{"Industrial Zone","Industrial Park","Free Zone","Export Processing Zone","Industrial Estate","Business Park","Special Economic Zone","Phase 1","Phase 2","Sector 3"}'::text[],
                                         pg_temp.u(k.loc, 6))) AS district,
           CASE WHEN k.hub_id > 0 THEN
               -- Gaussian around the district centre, 10% with a 4x tail.
               d.lat + d.sigma_km * CASE WHEN pg_temp.u(k.loc, 6) < 0.10 THEN 4 ELSE 1 END
                       * pg_temp.gauss(k.g1, k.g2) / 111.32
           ELSE c.lat0 + k.g1 / 4294967296.0::float8 * (c.lat1 - c.lat0) END AS lat,
           CASE WHEN k.hub_id > 0 THEN
               d.lon + d.sigma_km * CASE WHEN pg_temp.u(k.loc, 6) < 0.10 THEN 4 ELSE 1 END
                       * pg_temp.gauss(k.g3, k.g4) / d.km_per_lon_degree
           ELSE c.lon0 + k.g3 / 4294967296.0::float8 * (c.lon1 - c.lon0) END AS lon,
           -- Whole seconds in 2018-01-01 .. 2025-12-31 UTC.
           1514764800 + floor(pg_temp.u(k.i, 19) * 252460800)::bigint AS created_s
    FROM keyed k
    LEFT JOIN hub h ON h.id = k.hub_id
    -- District choice skewed towards the first (central) district.
    LEFT JOIN district d ON d.hub_id = k.hub_id
        AND d.n = 1 + floor(pg_temp.u(k.loc, 3) * pg_temp.u(k.loc, 3) * cardinality(h.districts))::int
    LEFT JOIN country_slot cs ON k.hub_id = 0 AND cs.slot = floor(pg_temp.u(k.loc, 3) * 4096)::int
    JOIN country c ON c.cc = coalesce(h.cc, cs.cc)
    OFFSET 0  -- evaluate city and created_s once
)
SELECT
    i AS id,
    cc || to_char(to_timestamp(created_s) AT TIME ZONE 'UTC', 'YYYYDDD')
       -- i -> (a*i + b) mod 36^6 is a bijection (a is prime to 36), so the
       -- suffix alone makes os_id unique while still looking random.
       || pg_temp.b36((i * 1679979167 + 918273645) % 2176782336) AS os_id,
    format(pg_temp.pick(name_fmts, pg_temp.u(i, 14)),
        CASE
            WHEN pg_temp.u(i, 11) < 0.45 THEN prefix || ' ' || product
            WHEN pg_temp.u(i, 11) < 0.75 THEN prefix || ' ' || product || ' ' || kind
            WHEN pg_temp.u(i, 11) < 0.88 THEN city || ' ' || product || ' ' || kind
            ELSE prefix || ' ' || pg_temp.pick(w.generic_prefixes, pg_temp.u(i, 17)) || ' ' || product
        END) AS name,
    format(coalesce(addr_fmt, '%1$s %5$s, %3$s, %4$s'),
        1 + floor(pg_temp.u(loc, 8) * pg_temp.u(loc, 8) * 900)::int,
        1 + floor(pg_temp.u(loc, 10) * 24)::int,
        district, city,
        coalesce(pg_temp.pick(streets, pg_temp.u(loc, 9)),
                 pg_temp.pick('{"Industrial Road","Main Street","Factory Lane","Export Zone Road","Station Road","Harbour Road","Mill Road"}'::text[],
                              pg_temp.u(loc, 9)))) AS address,
    cc::char(2) AS country_code,
    -- Heavy-tailed, P(n >= k) = 1 / (2k - 1): 86% have 1-3; the 0.8% above
    -- 60 are folded back into 40..60.
    (SELECT CASE WHEN n > 60 THEN 40 + n % 21 ELSE n END::int
     FROM (SELECT 1 + floor(0.5 * u / (1 - u))::bigint
           FROM (SELECT pg_temp.u(i, 18)) AS t(u)) AS t(n)) AS contributors,
    to_timestamp(created_s) AS created_at,
    -- A third never updated; the rest some time until the end of 2025.
    to_timestamp(CASE WHEN pg_temp.u(i, 20) < 0.35 THEN created_s
                      ELSE created_s + floor(pg_temp.u(i, 20) * pg_temp.u(i, 20) * (1767225600 - created_s))::bigint
                 END) AS updated_at,
    -- Rounded to 6 decimals like real geocodes (float arithmetic: round() of
    -- an exact product, then a correctly rounded division).
    ST_SetSRID(ST_MakePoint(round(greatest(-180, least(180, lon)) * 1e6) / 1e6,
                            round(greatest(-80, least(80, lat)) * 1e6) / 1e6), 4326)::geometry(Point, 4326) AS location
FROM placed
CROSS JOIN (SELECT '{Apex,Sunrise,Golden,Evergreen,Pacific,Royal,Crystal,Silver,Star,Grand,United,Unique,Victory,Orient,Delta,Everest,Harmony,Lotus,Phoenix,Jade,Prime,Fortune,Zenith,"Blue Ocean","Green Valley","New Asia",Eastern,Northern,Metro,Alpha,Dynamic,Classic,Modern,Liberty,Summit,Pioneer,Rainbow,Diamond,Pearl,Atlas,Crescent,Nova,Heritage,Noble,"Ever Bright",Sunshine,Maple,Tiger,Dragon,Eagle,Falcon}'::text[]) AS w(generic_prefixes)
CROSS JOIN LATERAL (SELECT
    coalesce(CASE WHEN pg_temp.u(i, 12) < 0.5 THEN pg_temp.pick(prefixes, pg_temp.u(i, 13)) END,
             pg_temp.pick(w.generic_prefixes, pg_temp.u(i, 13))) AS prefix,
    pg_temp.pick('{Knit,Knitwear,Garments,Apparel,Apparels,Fashion,Fashions,Textile,Textiles,Composite,Denim,Sweater,Dyeing,Washing,Spinning,Hosiery,Sportswear,Lingerie,Outerwear,Embroidery,Printing,Accessories,Fabrics,Weaving,"Knit Composite","Garment Accessories"}'::text[],
                 pg_temp.u(i, 15)) AS product,
    pg_temp.pick('{Industries,Mills,Manufacturing,Factory,Group,Enterprise,International,Company,Works,Creations}'::text[],
                 pg_temp.u(i, 16)) AS kind
) AS x;

ALTER TABLE :"schema".:"table"
    ALTER os_id SET NOT NULL, ALTER name SET NOT NULL, ALTER address SET NOT NULL,
    ALTER country_code SET NOT NULL, ALTER contributors SET NOT NULL,
    ALTER created_at SET NOT NULL, ALTER updated_at SET NOT NULL, ALTER location SET NOT NULL,
    ADD PRIMARY KEY (id), ADD UNIQUE (os_id);
CREATE INDEX :"idx_name" ON :"schema".:"table" USING gist (location);
COMMIT;

ANALYZE :"schema".:"table";
